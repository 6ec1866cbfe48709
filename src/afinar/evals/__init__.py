"""Evaluation that decides: strategies (base, few-shot, RAG, fine-tuned, both) answer the same
held-out cases; metrics with bootstrap intervals, measured cost, a forgetting check, and an
advisor that recommends from the measured table.

The names below load on first use: importing a submodule (``afinar.evals.metrics`` for the
``METRICS`` registry, ``afinar.evals.strategies`` for ``STRATEGIES``, as ``afinar eval run
--help`` does) does not load the runner, and with it the training code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from afinar.evals.config import EvalConfig, load_config, parse_config
    from afinar.evals.runner import EvalRun, get_run, list_runs, run

__all__ = ["EvalConfig", "EvalRun", "get_run", "list_runs", "load_config", "parse_config", "run"]


def __getattr__(name: str) -> Any:
    if name in ("EvalConfig", "load_config", "parse_config"):
        from afinar.evals import config as module
    elif name in ("EvalRun", "get_run", "list_runs", "run"):
        from afinar.evals import runner as module
    else:
        raise AttributeError(f"module 'afinar.evals' has no attribute {name!r}")
    return getattr(module, name)
