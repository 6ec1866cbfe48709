"""Tuning methods, one module each, registered by name in ``METHODS`` (plugins: entry points
``afinar.methods``)."""

from afinar.tuning.methods import (  # noqa: F401  (imports register the methods)
    continued_pretraining,
    dora,
    dpo,
    full,
    grpo,
    kto,
    lora,
    orpo,
    prompt_tuning,
    qlora,
    simpo,
)
from afinar.tuning.methods.base import (
    METHODS,
    BuildContext,
    Method,
    MethodConfig,
    get_method,
    method_for_type,
    objective_of,
    register,
)

__all__ = ["METHODS", "BuildContext", "Method", "MethodConfig", "get_method",
           "method_for_type", "objective_of", "register"]
