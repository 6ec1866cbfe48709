"""KTO (Ethayarajh et al. 2024) on unpaired answers labelled desirable or not (``afinar feedback
export --as kto``'s rows ``{"messages", "completion", "label"}``), with a LoRA policy. The
reference is the base with the adapter off, as DPO's (``afinar.tuning.objectives.kto``).
Hyperparameters: ``beta``, ``desirable_weight``, ``undesirable_weight``."""

from __future__ import annotations

from afinar.tuning.methods.base import BuildContext, Method, register
from afinar.tuning.methods.lora import LoraOptions, lora_config


@register
class Kto(Method):
    name = "kto"
    data_kind = "unpaired"
    objective = "kto"
    base_lr = 5e-5
    config_cls = LoraOptions

    def build(self, model, ctx: BuildContext):
        from peft import get_peft_model

        return get_peft_model(model, lora_config(self.config))
