"""DPO (Rafailov et al. 2023) on preference pairs, with a LoRA policy.

The reference model is the same base with the adapter switched off (``disable_adapter``), and its
log-probabilities are computed once before training: no second copy of the model in memory and no
reference forward pass per step (the memory problem users hit with DPO, TRL #3168).
"""

from __future__ import annotations

from afinar.tuning.methods.base import BuildContext, Method, register
from afinar.tuning.methods.lora import LoraOptions, lora_config


@register
class Dpo(Method):
    name = "dpo"
    data_kind = "preference"
    objective = "dpo"
    base_lr = 5e-5
    config_cls = LoraOptions

    def build(self, model, ctx: BuildContext):
        from peft import get_peft_model

        return get_peft_model(model, lora_config(self.config))
