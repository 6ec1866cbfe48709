"""ORPO (Hong et al. 2024) on preference pairs, with a LoRA policy: supervised learning of the
chosen answer plus an odds-ratio penalty on the rejected one, without a reference model
(``afinar.tuning.objectives.orpo``). Hyperparameter: ``beta`` (the paper's lambda)."""

from __future__ import annotations

from afinar.tuning.methods.base import BuildContext, Method, register
from afinar.tuning.methods.lora import LoraOptions, lora_config


@register
class Orpo(Method):
    name = "orpo"
    data_kind = "preference"
    objective = "orpo"
    base_lr = 5e-5
    config_cls = LoraOptions

    def build(self, model, ctx: BuildContext):
        from peft import get_peft_model

        return get_peft_model(model, lora_config(self.config))
