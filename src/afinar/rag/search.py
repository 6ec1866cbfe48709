"""Searching a knowledge base: the access and filter mask, a retriever (``rag.retrievers``), a
fusion of its rankings (``rag.fusion``), and an optional reranker (``rag.rerank``).

The mode and fusion weight a base searches with by default are kept in its ``info``
(``fusion_mode``, ``fusion_weight``: what ``afinar kb tune-fusion`` chose), else ``hybrid``;
so is whether reranking paid on it (``rerank``: a reranker's name or ``none``), which callers
that were not told read with ``stored_reranker`` (a reranker loads a model, so the caller, who
has the model cache, builds it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from afinar.errors import InvalidRequest
from afinar.rag.embeddings import for_base
from afinar.rag.filters import validate_filter
from afinar.rag.fusion import FUSIONS, fuse
from afinar.rag.index import KbIndex
from afinar.rag.records import KbRecords
from afinar.rag.retrievers import RETRIEVERS, Query
from afinar.store.tables import KbChunk, KbRecord

_ATTEMPTS = 3  # searches on a base changing under them before its readable hits are kept


@dataclass
class Hit:
    chunk_id: int
    doc_id: str
    source: str
    text: str
    score: float
    heading_path: list[str]
    pages: list[int]
    start: int
    end: int
    attributes: dict[str, Any]
    dense_score: float | None = None  # cosine similarity to the query
    lexical_score: float | None = None  # BM25
    dense_rank: int | None = None  # 1-based rank among the dense candidates
    lexical_rank: int | None = None
    score_kind: str = "rrf"  # what ``score`` is: a fusion's name, cosine, bm25, rerank


class KbSearch(KbRecords):
    def search(self, kb: str, query: str, *, groups: Iterable[str] | None = (),
               filters: dict | None = None, k: int = 10, mode: str | None = None,
               fusion: str | None = None, weight: float | None = None,
               score_threshold: float = 0.0, embedding_model: str | None = None,
               reranker=None) -> list[Hit]:
        """Top ``k`` chunks for ``query``. ``groups``: the caller's groups (documents with no
        groups are public); ``None`` means an unrestricted (administrative) search. ``mode``: a
        retriever (``RETRIEVERS``); ``fusion``: the rule for its two rankings (``FUSIONS``;
        default the retriever's); ``weight``: the weighted fusion's share of the cosine.
        ``reranker``: reorders a wider pool (3 x k) of the permitted results."""
        if not query.strip():
            raise InvalidRequest("query is empty", param="query")
        if not 1 <= k <= 100:
            raise InvalidRequest("max_num_results must be 1..100", param="max_num_results")
        if filters is not None:
            validate_filter(filters)
        asked = RETRIEVERS.get(mode) if mode is not None else None  # bad names: before loading
        if fusion is not None:
            FUSIONS.get(fusion)
            if asked is not None and asked.fusion is None:
                raise InvalidRequest(f"fusion {fusion!r} merges two rankings; mode {mode!r} "
                                     "gives one (use hybrid)", param="fusion")
        pool = k if reranker is None else 3 * k  # a reranker reorders a wider pool
        for _ in range(_ATTEMPTS):  # the base kept changing: its hits still readable now
            hits, current = self._search(kb, query, groups, filters, pool, asked, fusion,
                                         weight, score_threshold, embedding_model)
            if current:
                break
        # the ACL mask was already applied to the pool
        return hits if reranker is None else reranker.rerank(query, hits)[:k]

    def _search(self, kb, query, groups, filters, k, asked, fusion, weight, score_threshold,
                embedding_model) -> tuple[list[Hit], bool]:
        """One search on the index at the base's version; the hits, and whether that version
        is still the current one (else the caller searches again on the new one)."""
        rec, idx = self.index(kb)
        if embedding_model and embedding_model != rec.embedding_model:
            raise InvalidRequest(f"knowledge base {rec.name} was embedded with "
                                 f"{rec.embedding_model}, not {embedding_model}", param="model")
        retriever = (asked or RETRIEVERS.get(rec.info.get("fusion_mode", "hybrid")))()
        if fusion is not None and retriever.fusion is None:
            retriever = RETRIEVERS.get("hybrid")()  # the stored one-ranking mode gives way
        fusion = fusion or retriever.fusion
        if weight is None:
            weight = float(rec.info.get("fusion_weight", 0.5))

        def embed(text: str):
            return for_base(rec, self.settings).encode([text])[0]  # its chunks' backend

        q = Query(query, idx, idx.mask(None if groups is None else frozenset(groups), filters),
                  max(50, 5 * k), embed)
        found = retriever.retrieve(q)
        qv = found.vector
        cosine = (lambda i: float(idx.vectors[i] @ qv)) if qv is not None else None
        ranked = [f for f in fuse(found.dense, found.lexical, fusion, weight, cosine)
                  if f.relevance >= score_threshold and (f.relevance > 0 or score_threshold <= 0)]
        return self._hits(rec.id, idx, ranked[:k], fusion or retriever.score_kind)

    def stored_reranker(self, kb: str) -> str | None:
        """The reranker ``kb tune-fusion`` chose for the base, or ``None`` (none chosen, or
        ``none``: reranking did not pay)."""
        name = (self.get(kb).info or {}).get("rerank")
        return None if not name or name == "none" else str(name)

    def _hits(self, kb_id: str, idx: KbIndex, ranked, kind: str) -> tuple[list[Hit], bool]:
        """The chunks of ``ranked`` read from the database, and whether the index is still at
        the base's version. A chunk whose row is gone, belongs to another document or holds
        another vector than the index's (its document was deleted or replaced after the index
        was read) is left out: no hit ever comes from a removed or replaced document. The rows
        are read before the version, so an unchanged version means they are the index's."""
        rowids = [int(idx.rowids[f.index]) for f in ranked]
        with self.db.session() as s:
            rows = {c.rowid: c for c in s.scalars(select(KbChunk).where(
                KbChunk.rowid.in_(rowids)))} if rowids else {}
            version = s.scalar(select(KbRecord.version).where(KbRecord.id == kb_id))
        out = []
        for f, rid in zip(ranked, rowids):
            c, doc = rows.get(rid), idx.docs[int(idx.doc_of[f.index])]
            if c is None or c.doc_id != doc.id or c.vector != idx.vectors[f.index].tobytes():
                continue
            out.append(Hit(rid, doc.id, doc.source, c.text, float(f.score), c.heading_path,
                           c.pages, c.start, c.end, doc.attributes, f.dense_score,
                           f.lexical_score, f.dense_rank, f.lexical_rank, kind))
        return out, version == idx.version and len(out) == len(ranked)
