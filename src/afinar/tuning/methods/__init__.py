"""Tuning methods, one module each, registered by name (``REGISTRY``)."""

from afinar.tuning.methods import (  # noqa: F401  (imports register the methods)
    continued_pretraining,
    dora,
    dpo,
    full,
    lora,
    prompt_tuning,
    qlora,
)
from afinar.tuning.methods.base import REGISTRY, BuildContext, Method, MethodConfig, get_method

__all__ = ["REGISTRY", "BuildContext", "Method", "MethodConfig", "get_method"]
