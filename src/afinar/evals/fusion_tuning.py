"""Choosing a knowledge base's fusion on labelled queries (``afinar kb tune-fusion``).

Each candidate, reciprocal rank fusion (``hybrid``), one retriever alone (``dense``,
``lexical``) and the weighted sum of the two scores for weights 0, 0.1, ..., 1, is scored by its
mean nDCG@k (``evals.ranking``) over (query, relevant sources) pairs. The best is stored on the
base (``info``: ``fusion_mode``, ``fusion_weight``), where search reads its default from; a tie
goes to ``hybrid``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from afinar.errors import InvalidRequest
from afinar.evals.ranking import ndcg_at_k
from afinar.rag.kb import KnowledgeBases

WEIGHTS = [i / 10 for i in range(11)]


def candidates() -> list[tuple[str, str, float | None]]:
    """(label, search mode, weight) of every fusion tried."""
    return [("hybrid", "hybrid", None), ("dense", "dense", None), ("lexical", "lexical", None),
            *((f"weighted:{w:.1f}", "weighted", w) for w in WEIGHTS)]


def tune_fusion(kbs: KnowledgeBases, kb: str, labelled: list[tuple[str, set[str]]],
                groups: Iterable[str] | None = None, k: int = 10) -> dict[str, Any]:
    """Score every candidate on ``labelled`` (query, relevant sources), store the best on
    ``kb`` and return ``{"best": label, "ndcg": {label: mean nDCG@k}}``."""
    if not labelled:
        raise InvalidRequest("the labelled set is empty", param="file")

    def score(mode: str, weight: float | None) -> float:
        return sum(ndcg_at_k((h.source for h in kbs.search(kb, q, groups=groups, k=k, mode=mode,
                                                           weight=weight)), rel, k)
                   for q, rel in labelled) / len(labelled)

    table = {label: score(mode, w) for label, mode, w in candidates()}
    best = max(table, key=lambda m: (table[m], m == "hybrid"))

    def choose(info: dict) -> None:
        info["fusion_mode"] = best.split(":")[0]
        if best.startswith("weighted:"):
            info["fusion_weight"] = float(best.split(":")[1])

    kbs.update_info(kb, choose)
    return {"best": best, "ndcg": table}
