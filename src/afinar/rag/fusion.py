"""Fusing dense and lexical rankings: reciprocal rank fusion, or a weighted sum of scores.

Every fused hit carries the score it is ranked by (``score``, best first, so results are always
in the order of the score shown), the score a threshold applies to (``relevance``), and what each
retriever said about it: the dense (cosine) and lexical (BM25) scores and 1-based ranks.
"""

from __future__ import annotations

from typing import NamedTuple

RRF_K = 60

# what ``Fused.score`` is, per mode (shown next to scores by the CLI, and in the API)
SCORE_KINDS = {
    "hybrid": "rrf",  # reciprocal rank fusion, scaled so first in both rankings is 1
    "weighted": "weighted",  # weight * cosine + (1 - weight) * bm25 / best bm25
    "dense": "cosine",
    "lexical": "bm25",  # BM25 / the best candidate's BM25
}


class Fused(NamedTuple):
    index: int
    score: float  # what the hit is ranked by, in [0, 1]
    relevance: float  # what a score threshold is compared with
    dense_score: float | None
    lexical_score: float | None
    dense_rank: int | None
    lexical_rank: int | None


def fuse(dense, lexical, mode: str, weight: float = 0.5, cosine=None) -> list[Fused]:
    """Fused candidates, best first; scores in [0, 1].

    ``hybrid``: reciprocal rank fusion, ``sum(1 / (60 + rank))`` over the two rankings, divided
    by its maximum (ranked first by both) so it reads in [0, 1]. A rank-based score says nothing
    about relevance (the best of ten irrelevant chunks scores high), so a threshold compares the
    chunk's cosine similarity to the query instead (``relevance``).
    ``weighted``: ``weight * cosine + (1 - weight) * bm25 / max bm25`` over the candidates.
    ``dense`` and ``lexical``: one retriever's score (BM25 scaled by the best candidate's).
    ``cosine(i)`` gives the similarity of a candidate found only lexically.
    """
    d = {int(i): float(s) for i, s in zip(*dense)} if dense is not None else {}
    lx = {int(i): float(s) for i, s in zip(*lexical)} if lexical is not None else {}
    if cosine is not None and d:
        # lexical-only candidates join the dense ranking at their true similarity
        d.update({i: float(cosine(i)) for i in lx if i not in d})
        d = dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))
    rd = {i: r for r, i in enumerate(d, start=1)}
    rl = {i: r for r, i in enumerate(lx, start=1)}  # the lexical index's order, best first
    top = max(lx.values(), default=1.0) or 1.0

    def hit(i: int, score: float, relevance: float | None = None) -> Fused:
        return Fused(i, score, score if relevance is None else relevance, d.get(i), lx.get(i),
                     rd.get(i), rl.get(i))

    if mode == "dense":
        out = [hit(i, max(0.0, s)) for i, s in d.items()]
    elif mode == "lexical":
        out = [hit(i, s / top) for i, s in lx.items()]
    elif mode == "weighted":
        out = [hit(i, weight * max(0.0, d.get(i, 0.0)) + (1 - weight) * lx.get(i, 0.0) / top)
               for i in set(d) | set(lx)]
    else:
        best = 2 / (RRF_K + 1)
        out = [hit(i, sum(1 / (RRF_K + r[i]) for r in (rd, rl) if i in r) / best,
                   max(0.0, d[i]) if i in d else 0.0) for i in set(d) | set(lx)]
    out.sort(key=lambda f: (-f.score, f.index))
    return out
