"""Tuning methods, one module each, registered by name in ``METHODS`` (plugins: entry points
``afinar.methods``)."""

from afinar.tuning.methods import (  # noqa: F401  (imports register the methods)
    continued_pretraining,
    dora,
    dpo,
    full,
    grpo,
    lora,
    prompt_tuning,
    qlora,
)
from afinar.tuning.methods.base import (
    METHODS,
    BuildContext,
    Method,
    MethodConfig,
    get_method,
    objective_of,
    register,
)

__all__ = ["METHODS", "BuildContext", "Method", "MethodConfig", "get_method",
           "objective_of", "register"]
