"""SimPO (Meng et al. 2024) on preference pairs, with a LoRA policy: length-normalised
log-probabilities with a target margin, without a reference model
(``afinar.tuning.objectives.simpo``). Hyperparameters: ``beta``, ``gamma``, ``cpo_alpha``."""

from __future__ import annotations

from afinar.tuning.methods.base import BuildContext, Method, register
from afinar.tuning.methods.lora import LoraOptions, lora_config


@register
class Simpo(Method):
    name = "simpo"
    data_kind = "preference"
    objective = "simpo"
    base_lr = 5e-5
    config_cls = LoraOptions

    def build(self, model, ctx: BuildContext):
        from peft import get_peft_model

        return get_peft_model(model, lora_config(self.config))
