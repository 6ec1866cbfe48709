"""Continued pretraining on raw domain text: every token is trained, with LoRA or all weights."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from afinar.tuning.methods.base import BuildContext, Method, register
from afinar.tuning.methods.lora import LoraOptions, lora_config


class CptOptions(LoraOptions):
    adapter: Literal["lora", "full"] = "lora"
    r: int = Field(32, ge=1, le=512)
    alpha: int = Field(64, ge=1)


@register
class ContinuedPretraining(Method):
    name = "continued_pretraining"
    data_kind = "text"
    config_cls = CptOptions

    def __init__(self, config=None):
        super().__init__(config)
        if self.config.adapter == "full":  # every weight trains: a complete model folder
            self.artifact, self.shares_base, self.mergeable = "full", False, False
            self.base_lr = 2e-5

    def build(self, model, ctx: BuildContext):
        if self.config.adapter == "full":
            for p in model.parameters():
                p.requires_grad_(True)
            return model
        from peft import get_peft_model

        return get_peft_model(model, lora_config(self.config))
