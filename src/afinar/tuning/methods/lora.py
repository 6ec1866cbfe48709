"""LoRA (Hu et al. 2021) through PEFT: low-rank updates on the chosen linear layers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from afinar.tuning.methods.base import BuildContext, Method, MethodConfig, register


class LoraOptions(MethodConfig):
    r: int = Field(16, ge=1, le=512)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


def lora_config(o: LoraOptions, use_dora: bool = False):
    from peft import LoraConfig

    return LoraConfig(r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout,
                      target_modules=o.target_modules, use_dora=use_dora, task_type="CAUSAL_LM")


@register
class Lora(Method):
    name = "lora"
    config_cls = LoraOptions
    default_for_type = True  # OpenAI's ``supervised``

    def build(self, model, ctx: BuildContext):
        from peft import get_peft_model

        return get_peft_model(model, lora_config(self.config))
