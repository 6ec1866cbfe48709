"""Ranking metrics over a ranked list of documents and the set of relevant ones (binary
relevance): nDCG@k and recall@k, defined once for every caller (fusion tuning, retrieval
evaluations).

A ranking may name a document more than once (several of its chunks were retrieved); a document
counts once, at its best rank (``unique``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable


def unique(ranked: Iterable[str]) -> list[str]:
    """The ranking with each document at its first (best) rank only."""
    seen: set[str] = set()
    out = []
    for doc in ranked:
        if doc not in seen:
            seen.add(doc)
            out.append(doc)
    return out


def ndcg_at_k(ranked: Iterable[str], relevant: Collection[str], k: int) -> float:
    """Normalised discounted cumulative gain of the top ``k`` documents: the sum of
    ``1 / log2(rank + 1)`` over relevant documents, divided by that of an ideal ranking (all
    relevant documents first); 0 when nothing is relevant."""
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    if not ideal:
        return 0.0
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(unique(ranked)[:k]) if d in relevant)
    return dcg / ideal


def recall_at_k(ranked: Iterable[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant documents among the top ``k``; 0 when nothing is relevant."""
    if not relevant:
        return 0.0
    return sum(d in relevant for d in unique(ranked)[:k]) / len(relevant)
