"""What every metric shares: ``Score``, ``Prediction``, the ``Metric`` base class, the ``METRICS``
registry, ``build`` and the bootstrap interval.

Lexical normalisation (``normalize``) follows the SQuAD evaluation script (lower case, no
punctuation, no articles, single spaces).
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from afinar.errors import InvalidRequest
from afinar.evals.cases import Case
from afinar.registry import Registry


@dataclass
class Score:
    value: float
    note: str | None = None  # "kind" or "kind: detail"; the table counts notes by kind


@dataclass
class Prediction:
    """What a strategy produced for one case (also what the run stores per line)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0  # retrieval + generation, wall clock
    generation_s: float = 0.0
    sources: list[dict[str, Any]] | None = None  # retrieved: {"source", "text", "chunk_id"}
    error: str | None = None
    added_tokens: int = 0  # prompt tokens beyond the case's own messages (examples, sources)
    started_at: float = 0.0  # wall clock (time.time) of the timed section: overlap is testable
    ended_at: float = 0.0


class Metric:
    """A way to score one prediction against its case; a grader is a metric.

    Lexical checks, JSON and label checks, retrieval checks and model graders (the ``judge``, and
    later graders that score with a model) all take this one shape: ``name`` (the key in
    ``METRICS`` and in ``eval.yaml``), a one-line ``description`` (``afinar eval run --help``),
    options as keyword arguments (``{name: label_accuracy, labels: [...]}``; a bad option is an
    ``InvalidRequest``), and ``score`` returning a ``Score`` in [0, 1], or None when the metric
    does not apply to the case (no gold sources, nothing retrieved).
    """

    name: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, **options: Any):
        if options:
            raise InvalidRequest(f"metric {self.name} takes no options, got "
                                 f"{', '.join(sorted(options))}", param="metrics")

    def score(self, pred: Prediction, case: Case) -> Score | None:
        raise NotImplementedError


METRICS: Registry[type[Metric]] = Registry("metric", "afinar.metrics", param="metrics")


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def parse_json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return False, None


def build(spec: str | dict[str, Any]) -> Metric:
    """A metric from its name, or ``{"name": ..., **options}``."""
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    name = spec.pop("name", None)
    cls = METRICS.get(name)
    try:
        return cls(**spec)
    except TypeError as e:
        raise InvalidRequest(f"metric {name}: {e}", param="metrics") from None


def bootstrap_ci(values, n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (cases resampled with replacement)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    if a.size == 1 or np.all(a == a[0]):
        return float(a[0]) if a.size == 1 else float(a.mean()), float(a.mean())
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(n_resamples, a.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)
