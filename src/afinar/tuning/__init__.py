"""Fine-tuning: methods as registered recipes, objectives that turn their batches into a loss,
jobs with OpenAI's shape, a worker that runs them, a training loop that resumes exactly,
checkpoints usable as models.

The names below load on first use (PEP 562), so that ``afinar.tuning.methods`` (the method
names for CLI help) can be read without importing torch and the job machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for readers and type checkers
    from afinar.tuning.hparams import Hyperparameters, Resolved, resolve
    from afinar.tuning.jobs import Jobs, model_id_for
    from afinar.tuning.methods import METHODS, get_method
    from afinar.tuning.objectives import OBJECTIVES
    from afinar.tuning.worker import run_worker, spawn_worker

_WHERE = {"Hyperparameters": "hparams", "Resolved": "hparams", "resolve": "hparams",
          "Jobs": "jobs", "model_id_for": "jobs", "METHODS": "methods", "get_method": "methods",
          "OBJECTIVES": "objectives", "run_worker": "worker", "spawn_worker": "worker"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'afinar.tuning' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"afinar.tuning.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
