"""Fusing dense and lexical rankings: reciprocal rank fusion, or a weighted sum of scores.

Every fused hit carries the score it is ranked by (``score``, best first, so results are always
in the order of the score shown), the score a threshold applies to (``relevance``), and what each
retriever said about it: the dense (cosine) and lexical (BM25) scores and 1-based ranks.

Fusion rules are registered in ``FUSIONS`` (``rrf``, ``weighted``; plugins: the entry point
group ``afinar.fusions``). A rule is a function ``(candidates, weight) -> [Fused]`` whose name is
also the kind of score it gives (``Hit.score_kind``). One ranking alone (the ``dense`` or
``lexical`` retriever) is scored by its own score, without a fusion (``one_ranking``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from afinar.registry import Registry

RRF_K = 60


class Fused(NamedTuple):
    index: int
    score: float  # what the hit is ranked by, in [0, 1]
    relevance: float  # what a score threshold is compared with
    dense_score: float | None
    lexical_score: float | None
    dense_rank: int | None
    lexical_rank: int | None


@dataclass
class Candidates:
    """One query's candidates as the retrievers ranked them: chunk index -> score, best first
    (``dense``: cosine, ``lexical``: BM25), their 1-based ranks, and the best BM25."""

    dense: dict[int, float]
    lexical: dict[int, float]
    dense_rank: dict[int, int]
    lexical_rank: dict[int, int]
    top_bm25: float

    @classmethod
    def of(cls, dense, lexical, cosine: Callable[[int], float] | None = None) -> Candidates:
        """From the indexes' ``(indices, scores)`` pairs (``None``: that retriever did not run);
        ``cosine(i)`` gives the similarity of a candidate found only lexically."""
        d = {int(i): float(s) for i, s in zip(*dense)} if dense is not None else {}
        lx = {int(i): float(s) for i, s in zip(*lexical)} if lexical is not None else {}
        if cosine is not None and d:
            # lexical-only candidates join the dense ranking at their true similarity
            d.update({i: float(cosine(i)) for i in lx if i not in d})
            d = dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))
        return cls(d, lx, {i: r for r, i in enumerate(d, start=1)},
                   {i: r for r, i in enumerate(lx, start=1)},  # the lexical index's order
                   max(lx.values(), default=1.0) or 1.0)

    def ids(self) -> set[int]:
        return set(self.dense) | set(self.lexical)

    def hit(self, i: int, score: float, relevance: float | None = None) -> Fused:
        return Fused(i, score, score if relevance is None else relevance, self.dense.get(i),
                     self.lexical.get(i), self.dense_rank.get(i), self.lexical_rank.get(i))


Fusion = Callable[[Candidates, float], list[Fused]]
FUSIONS: Registry[Fusion] = Registry("fusion", "afinar.fusions", param="fusion")


@FUSIONS.register("rrf")
def rrf(c: Candidates, weight: float = 0.5) -> list[Fused]:
    """Reciprocal rank fusion, ``sum(1 / (60 + rank))`` over the two rankings, divided by its
    maximum (ranked first by both) so it reads in [0, 1]; ``weight`` is not used. A rank-based
    score says nothing about relevance (the best of ten irrelevant chunks scores high), so a
    threshold compares the chunk's cosine similarity to the query instead (``relevance``)."""
    best = 2 / (RRF_K + 1)
    return [c.hit(i, sum(1 / (RRF_K + r[i]) for r in (c.dense_rank, c.lexical_rank) if i in r)
                  / best, max(0.0, c.dense[i]) if i in c.dense else 0.0) for i in c.ids()]


@FUSIONS.register("weighted")
def weighted(c: Candidates, weight: float = 0.5) -> list[Fused]:
    """``weight * cosine + (1 - weight) * bm25 / max bm25`` over the candidates."""
    return [c.hit(i, weight * max(0.0, c.dense.get(i, 0.0))
                  + (1 - weight) * c.lexical.get(i, 0.0) / c.top_bm25) for i in c.ids()]


def one_ranking(c: Candidates) -> list[Fused]:
    """One retriever's own score: the cosine (dense), else BM25 scaled by the best
    candidate's (lexical)."""
    if c.dense:
        return [c.hit(i, max(0.0, s)) for i, s in c.dense.items()]
    return [c.hit(i, s / c.top_bm25) for i, s in c.lexical.items()]


def fuse(dense, lexical, fusion: str | None = "rrf", weight: float = 0.5,
         cosine: Callable[[int], float] | None = None) -> list[Fused]:
    """Fused candidates, best first; scores in [0, 1]. ``fusion``: a name in ``FUSIONS``, or
    ``None`` for one ranking scored by its own score (``one_ranking``)."""
    rule = FUSIONS.get(fusion) if fusion is not None else None
    c = Candidates.of(dense, lexical, cosine)
    out = rule(c, weight) if rule is not None else one_ranking(c)
    out.sort(key=lambda f: (-f.score, f.index))
    return out
