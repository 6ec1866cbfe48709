"""Distribution summaries and OpenAI's default-epochs rule."""

from __future__ import annotations

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


def summary(values: Sequence[float]) -> dict[str, float] | None:
    """min, p5, median, mean, p95, max (true percentiles, not the cookbook's 10/90)."""
    if len(values) == 0:
        return None
    a = np.asarray(values, dtype=np.float64)
    p5, med, p95 = np.percentile(a, [5, 50, 95])
    return {"min": float(a.min()), "p5": float(p5), "median": float(med),
            "mean": round(float(a.mean()), 2), "p95": float(p95), "max": float(a.max())}
