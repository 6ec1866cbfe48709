"""Two fine-tunes side by side under one evaluation (``afinar tune rebase --eval``): the old job's
model and the re-based one, answered, scored and advised by the same runner and advisor.

``fine_tune_comparison`` turns an evaluation config into that comparison: each of its fine-tuned
strategies (``fine_tuned``, ``fine_tuned_rag``: their settings, such as ``k`` and the knowledge
base, kept) gets the two models as its columns, and the strategies without a fine-tuned model are
left out (they do not depend on either fine-tune); a config with no fine-tuned strategy compares
them with a plain ``fine_tuned`` one. The test file, metrics, main metric and generation stay
the config's, so the two are measured on the same cases in the same way.
"""

from __future__ import annotations

from afinar.errors import InvalidRequest
from afinar.evals.config import EvalConfig
from afinar.evals.strategies import STRATEGIES, StrategySpec


def fine_tune_comparison(config: EvalConfig, old: str, new: str) -> EvalConfig:
    """``config`` with every fine-tuned strategy answering with ``old`` and ``new`` (one column
    each) and no other strategy."""
    if old == new:
        raise InvalidRequest("the two fine-tunes to compare are the same model", param="model")
    tuned = [s for s in config.strategies if STRATEGIES.get(s.type).fine_tuned]
    if not tuned:
        tuned = [StrategySpec(type="fine_tuned")]
    strategies = [s.model_copy(update={"model": None, "models": [old, new], "jobs": [],
                                       "name": None}) for s in tuned]
    return config.model_copy(update={"strategies": strategies,
                                     "name": f"{config.name or 'eval'}: {old} vs {new}"})
