"""Distribution summaries, OpenAI's default-epochs rule and afinar's ``auto`` batch size and
epochs (documented in ``afinar.tuning.hparams``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# OpenAI's auto n_epochs (the cookbook's cost notebook): aim for 3 passes, but at least 100 and
# at most 25,000 example-passes, within 1..25 epochs.
TARGET_EPOCHS, MIN_EXAMPLE_PASSES, MAX_EXAMPLE_PASSES = 3, 100, 25_000
MIN_EPOCHS, MAX_EPOCHS = 1, 25


def default_epochs(n_examples: int) -> int:
    if n_examples <= 0:
        return TARGET_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_EXAMPLE_PASSES:
        return min(MAX_EPOCHS, MIN_EXAMPLE_PASSES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_EXAMPLE_PASSES:
        return max(MIN_EPOCHS, MAX_EXAMPLE_PASSES // n_examples)
    return TARGET_EPOCHS


MIN_STEPS = 100  # optimiser steps a job with any auto hyperparameter aims for (rule 3)
MAX_AUTO_EPOCHS = MAX_EPOCHS  # OpenAI's MAX_DEFAULT_EPOCHS
BATCH_FRACTION, MAX_AUTO_BATCH = 0.002, 256


def auto_batch_size(n_examples: int) -> int:
    """~0.2% of the examples as the nearest power of two (log scale), 1..256."""
    raw = BATCH_FRACTION * max(n_examples, 1)
    bs = 1 if raw < 1 else 2 ** round(math.log2(raw))
    return int(min(MAX_AUTO_BATCH, bs, max(1, n_examples)))


def steps_per_epoch(n_examples: int, batch_size: int, accumulation: int = 1) -> int:
    return math.ceil(math.ceil(max(n_examples, 0) / batch_size) / accumulation)


def choose_epochs_and_batch(n_examples: int, n_epochs: int | str, batch_size: int | str,
                            accumulation: int = 1) -> tuple[int, int]:
    """Rules 1-3 of ``afinar.tuning.hparams``: (epochs, batch size) for the values left ``auto``."""
    n = max(n_examples, 1)
    bs = auto_batch_size(n) if batch_size == "auto" else min(int(batch_size), n)
    epochs = default_epochs(n) if n_epochs == "auto" else int(n_epochs)
    if batch_size == "auto":
        while bs > 1 and steps_per_epoch(n, bs, accumulation) * epochs < MIN_STEPS:
            bs //= 2
    if n_epochs == "auto":
        per = steps_per_epoch(n, bs, accumulation)
        if per * epochs < MIN_STEPS:
            epochs = max(epochs, min(MAX_AUTO_EPOCHS, math.ceil(MIN_STEPS / per)))
    return epochs, bs


def summary(values: Sequence[float]) -> dict[str, float] | None:
    """min, p5, median, mean, p95, max (true percentiles, not the cookbook's 10/90)."""
    if len(values) == 0:
        return None
    a = np.asarray(values, dtype=np.float64)
    p5, med, p95 = np.percentile(a, [5, 50, 95])
    return {"min": float(a.min()), "p5": float(p5), "median": float(med),
            "mean": round(float(a.mean()), 2), "p95": float(p95), "max": float(a.max())}
