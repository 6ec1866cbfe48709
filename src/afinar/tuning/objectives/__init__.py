"""Training objectives, one module each, registered by name in ``OBJECTIVES`` (plugins: entry
points ``afinar.objectives``); a tuning method names the one it trains with."""

from afinar.tuning.objectives import (  # noqa: F401  (imports register the objectives)
    dpo,
    grpo,
    kto,
    orpo,
    sft,
    simpo,
)
from afinar.tuning.objectives.base import (
    OBJECTIVES,
    Batch,
    EvalSums,
    Item,
    Objective,
    ObjectiveContext,
    PartLoss,
    StepPart,
    register,
)

__all__ = ["OBJECTIVES", "Batch", "EvalSums", "Item", "Objective", "ObjectiveContext",
           "PartLoss", "StepPart", "register"]
