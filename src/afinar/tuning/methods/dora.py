"""DoRA (Liu et al. 2024) through PEFT: LoRA with the weight split into magnitude and direction."""

from __future__ import annotations

from afinar.tuning.methods.base import BuildContext, Method, register
from afinar.tuning.methods.lora import LoraOptions, lora_config


@register
class Dora(Method):
    name = "dora"
    config_cls = LoraOptions

    def build(self, model, ctx: BuildContext):
        from peft import get_peft_model

        return get_peft_model(model, lora_config(self.config, use_dora=True))
