"""QLoRA (Dettmers et al. 2023): LoRA on a 4-bit NF4 base through bitsandbytes. CUDA only."""

from __future__ import annotations

from typing import Any

from afinar.errors import InvalidRequest
from afinar.tuning.methods.base import BuildContext, Method, register
from afinar.tuning.methods.lora import LoraOptions, lora_config


@register
class Qlora(Method):
    name = "qlora"
    config_cls = LoraOptions

    def check_device(self, device: str) -> None:
        if not device.startswith("cuda"):
            raise InvalidRequest(
                "qlora needs a CUDA GPU: its 4-bit base weights use bitsandbytes kernels, which "
                "have no CPU path, and a CPU gains nothing from 4-bit storage for a model this "
                "size; use --method lora here (same adapter, fp32 base)", param="method")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as e:
            raise InvalidRequest("qlora needs the bitsandbytes package: pip install bitsandbytes",
                                 param="method") from e

    def load_kwargs(self, device: str) -> dict[str, Any]:
        import torch
        from transformers import BitsAndBytesConfig

        return {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)}

    def build(self, model, ctx: BuildContext):
        from peft import get_peft_model, prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return get_peft_model(model, lora_config(self.config))
