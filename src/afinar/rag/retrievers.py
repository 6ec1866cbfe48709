"""Retrievers: what ranks a knowledge base's chunks for a query, before fusion and reranking.

``RETRIEVERS`` maps a search ``mode`` to a retriever class (plugins: the entry point group
``afinar.retrievers``):

- ``dense``: cosine similarity to the query's embedding (exact, or HNSW over large bases);
- ``lexical``: BM25 over the chunks' text;
- ``hybrid``: both rankings, fused by reciprocal rank fusion unless a fusion is asked for;
- ``weighted``: both, fused by the weighted sum (the mode ``kb tune-fusion`` stores when a
  weight wins, and the API's ``ranking_options.hybrid_search`` asks for).

A retriever reads only the chunks the caller may read: ``Query.allowed`` is the index's access
and filter mask, applied before ranking. It returns one or two rankings; ``fusion`` names the
rule (``rag.fusion.FUSIONS``) that merges its two, ``None`` for a retriever of one ranking,
whose results are scored by their own score (``score_kind``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from afinar.registry import Registry

if TYPE_CHECKING:  # the CLI reads the names for its help: keep this module light
    import numpy as np

    from afinar.rag.index import KbIndex

    Ranking = tuple[np.ndarray, np.ndarray]  # chunk indices, scores; best first


@dataclass
class Query:
    text: str
    index: KbIndex
    allowed: np.ndarray  # chunks the caller may read that pass the filters
    candidates: int  # how many each ranking returns
    embed: Callable[[str], np.ndarray]  # the base's embedding model, for one text

    _vector: np.ndarray | None = None

    def vector(self) -> np.ndarray:
        """The query's embedding (computed once)."""
        if self._vector is None:
            self._vector = self.embed(self.text)
        return self._vector


@dataclass
class Rankings:
    dense: Ranking | None = None
    lexical: Ranking | None = None
    vector: np.ndarray | None = None  # the query's embedding, when a dense ranking was made


class Retriever(Protocol):
    """What a registered retriever class provides (built with no arguments)."""

    fusion: str | None  # the default rule for its two rankings; None: it gives one ranking
    score_kind: str  # what a hit's score is when it gives one ranking (else: the fusion's name)

    def retrieve(self, q: Query) -> Rankings: ...


RETRIEVERS: Registry[type[Retriever]] = Registry("retriever", "afinar.retrievers", param="mode")


@RETRIEVERS.register("dense")
class Dense:
    """Cosine similarity of the query's embedding and the chunks'."""

    fusion, score_kind = None, "cosine"

    def retrieve(self, q: Query) -> Rankings:
        v = q.vector()
        return Rankings(dense=q.index.dense(v, q.allowed, q.candidates), vector=v)


@RETRIEVERS.register("lexical")
class Lexical:
    """BM25 over the chunks' text (scores scaled by the best candidate's)."""

    fusion, score_kind = None, "bm25"

    def retrieve(self, q: Query) -> Rankings:
        return Rankings(lexical=q.index.lexical(q.text, q.allowed, q.candidates))


@RETRIEVERS.register("hybrid")
class Hybrid:
    """The dense and the lexical ranking, fused (reciprocal rank fusion by default)."""

    fusion, score_kind = "rrf", "rrf"

    def retrieve(self, q: Query) -> Rankings:
        dense = Dense().retrieve(q)
        return Rankings(dense.dense, Lexical().retrieve(q).lexical, dense.vector)


@RETRIEVERS.register("weighted")
class Weighted(Hybrid):
    """Hybrid retrieval fused by the weighted sum of the two scores by default."""

    fusion, score_kind = "weighted", "weighted"
