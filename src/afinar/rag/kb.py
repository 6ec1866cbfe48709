"""Knowledge bases: ingest documents (load, chunk, embed), keep them in sync with their sources,
search them (lexical, dense, hybrid) with access control and filters, and check their indexes.

A document is identified by its source path and content hash: re-adding an unchanged file does
nothing, a changed file replaces its chunks in one transaction, a deleted one is removed. Each
document is committed on its own, so an interrupted ingestion resumes by running it again,
without duplicates.
"""

from __future__ import annotations

import copy
import hashlib
import re
import threading
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, update

from afinar.errors import Conflict, InvalidRequest, NotFound
from afinar.ids import new_id
from afinar.rag.chunking import ChunkingStrategy, chunk_document, embedding_token_counter, \
    resolve_sizes
from afinar.rag.embeddings import get_embedder
from afinar.rag.index import CACHE, KbIndex
from afinar.rag.loaders import load_document, supported_extensions
from afinar.settings import Settings, get_settings
from afinar.store.blobs import sha256_file
from afinar.store.db import get_database
from afinar.store.tables import KbChunk, KbDocument, KbRecord

_INFO_LOCK = threading.Lock()  # info is read-modify-written; SQLite serialises processes
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
Progress = Callable[[dict], None]


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
    score_kind: str = "rrf"  # what ``score`` is: rrf, weighted, cosine, bm25 (fusion.py), rerank


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0


EMBED_BATCH = 64  # chunks embedded together across documents


@dataclass
class _Item:
    source: str
    path: Path | None = None
    text: str | None = None
    digest: str | None = None


def _text_document(item: _Item):
    from afinar.rag.document import DocumentBuilder

    b = DocumentBuilder(item.source)
    for para in (p for p in item.text.split("\n\n") if p.strip()):
        b.add("paragraph", para.strip())
    return b.build()


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Files to ingest: given files, and supported files under given folders (sorted)."""
    exts = set(supported_extensions())
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts)
        elif p.is_file():
            out.append(p)
        else:
            raise InvalidRequest(f"{p}: no such file or folder", param="path")
    return [p.resolve() for p in out]


class KnowledgeBases:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.db = get_database(self.settings.db_url)

    # -- records ---------------------------------------------------------------------------
    def create(self, name: str | None, embedding_model: str | None = None,
               chunking: dict | None = None, internal: bool = False,
               info: dict[str, Any] | None = None, owner: dict[str, Any] | None = None
               ) -> KbRecord:
        """A new knowledge base; without a name its id is its name (the server's vector stores
        keep their display name in ``info``). ``owner``: its project and creator columns
        (``project_id``, ``owner_key_id``), written with the record."""
        kb_id = new_id("vs_")
        name = name or kb_id
        if not _NAME.match(name.removeprefix("_") if internal else name):
            raise InvalidRequest(f"invalid knowledge base name {name!r}", param="name")
        strategy = ChunkingStrategy.parse(chunking)
        emb = get_embedder(embedding_model, self.settings)
        with self.db.session() as s:
            if s.scalar(select(KbRecord.id).where(KbRecord.name == name)):
                raise Conflict(f"a knowledge base named {name!r} exists", param="name")
            rec = KbRecord(id=kb_id, name=name, embedding_model=emb.model_id,
                           dimensions=emb.dimensions, chunking=strategy.model_dump(), version=0,
                           created_at=int(time.time()), info=dict(info or {}),
                           **(owner or {}))
            s.add(rec)
        return rec

    def get(self, name_or_id: str) -> KbRecord:
        with self.db.session() as s:
            rec = s.get(KbRecord, name_or_id) or s.scalar(
                select(KbRecord).where(KbRecord.name == name_or_id))
        if rec is None:
            raise NotFound(f"no knowledge base {name_or_id!r}", param="vector_store_id")
        return rec

    def list(self, internal: bool = False) -> list[KbRecord]:
        with self.db.session() as s:
            recs = list(s.scalars(select(KbRecord).order_by(KbRecord.created_at)))
        return [r for r in recs if internal or not r.name.startswith("_")]

    def update_info(self, kb: str, change: Callable[[dict], None]) -> dict[str, Any]:
        """Change the base's ``info`` (settings and bookkeeping) in one transaction."""
        rec = self.get(kb)
        with _INFO_LOCK, self.db.session() as s:
            r = s.get(KbRecord, rec.id)
            info = copy.deepcopy(r.info or {})
            change(info)
            r.info = info
        return info

    def set_attributes(self, kb: str, source: str, attributes: dict[str, Any],
                       groups: list[str] | None = None) -> None:
        """New attributes (and, when given, access groups) for one document (by source or id),
        without re-reading it."""
        rec = self.get(kb)
        with self.db.session() as s:
            doc = s.scalar(select(KbDocument).where(
                KbDocument.kb_id == rec.id,
                (KbDocument.source == source) | (KbDocument.id == source)))
            if doc is None:
                raise NotFound(f"no document {source!r} in {rec.name}", param="file_id")
            doc.attributes, doc.updated_at = dict(attributes), int(time.time())
            if groups is not None:
                doc.groups = sorted(set(groups))
            self._bump(s, rec.id)  # filters and the ACL mask read the index: rebuild it

    def documents(self, kb: str) -> list[KbDocument]:
        rec = self.get(kb)
        with self.db.session() as s:
            return list(s.scalars(select(KbDocument).where(KbDocument.kb_id == rec.id)
                                  .order_by(KbDocument.source)))

    def delete(self, kb: str) -> None:
        rec = self.get(kb)
        with self.db.session() as s:
            s.execute(delete(KbChunk).where(KbChunk.kb_id == rec.id))
            s.execute(delete(KbDocument).where(KbDocument.kb_id == rec.id))
            s.execute(delete(KbRecord).where(KbRecord.id == rec.id))
        CACHE.drop(rec.id)
        shutil.rmtree(self._dir(rec.id), ignore_errors=True)

    def _dir(self, kb_id: str) -> Path:
        return self.settings.home / "kb" / kb_id

    # -- ingestion -------------------------------------------------------------------------
    def add(self, kb: str, paths: Iterable[str | Path], groups: list[str] | None = None,
            attributes: dict[str, Any] | None = None, progress: Progress | None = None,
            sources: dict[Path, str] | None = None) -> IngestReport:
        """Ingest files (folders recursively). ``sources`` maps a path to the name it is known
        by (the server uses file ids); by default the resolved path."""
        files = expand(paths)
        items = [_Item((sources or {}).get(p, str(p)), path=p) for p in files]
        return self._ingest(kb, items, groups or [], attributes or {}, progress)

    def add_texts(self, kb: str, texts: Iterable[tuple[str, str]],
                  groups: list[str] | None = None, attributes: dict[str, Any] | None = None,
                  progress: Progress | None = None) -> IngestReport:
        """Ingest in-memory texts as ``(source, text)`` pairs (memories, notes, benchmarks)."""
        items = []
        for source, text in texts:
            if not text.strip():
                raise InvalidRequest(f"{source}: text is empty", param="text")
            items.append(_Item(source, text=text))
        return self._ingest(kb, items, groups or [], attributes or {}, progress)

    def add_text(self, kb: str, source: str, text: str, groups: list[str] | None = None,
                 attributes: dict[str, Any] | None = None) -> IngestReport:
        return self.add_texts(kb, [(source, text)], groups, attributes)

    def _ingest(self, kb: str, items: list[_Item], groups: list[str], attributes: dict,
                progress: Progress | None) -> IngestReport:
        """Load and chunk documents, embed their chunks in batches across documents (the model
        is fastest on full batches), and commit each document in its own transaction."""
        rec = self.get(kb)
        emb = get_embedder(rec.embedding_model, self.settings)
        count = embedding_token_counter(emb.path)
        max_tok, overlap, _ = resolve_sizes(rec.chunking, emb.max_tokens)
        report, t0 = IngestReport(), time.perf_counter()
        groups = sorted(groups)
        pending: list[tuple[_Item, list]] = []

        def flush() -> None:
            texts = [c.text for _, chunks in pending for c in chunks]
            vecs = emb.encode(texts) if texts else np.zeros((0, rec.dimensions), np.float32)
            at = 0
            for item, chunks in pending:
                self._commit(rec, item, groups, attributes, chunks, vecs[at:at + len(chunks)],
                             report)
                at += len(chunks)
            pending.clear()

        for i, item in enumerate(items):
            try:
                item.digest = item.digest or (sha256_file(item.path) if item.path else
                                              hashlib.sha256(item.text.encode()).hexdigest())
                if not self._unchanged(rec, item, groups, attributes, report):
                    doc = load_document(item.path) if item.path else _text_document(item)
                    pending.append((item, chunk_document(doc, count, max_tok, overlap)))
            except InvalidRequest as e:
                report.failed.append((item.source, e.message))
            if sum(len(c) for _, c in pending) >= EMBED_BATCH:
                flush()
            if progress:
                progress({"files": i + 1, "total": len(items), "chunks": report.chunks,
                          "chunks_per_s": report.chunks / max(time.perf_counter() - t0, 1e-9),
                          "source": item.source})
        flush()
        if report.added or report.updated:
            self.index(kb)  # build the indexes now, not on the first query
        report.seconds = time.perf_counter() - t0
        return report

    def _unchanged(self, rec: KbRecord, item: _Item, groups: list[str], attributes: dict,
                   report: IngestReport) -> bool:
        with self.db.session() as s:
            old = s.scalar(select(KbDocument).where(KbDocument.kb_id == rec.id,
                                                    KbDocument.source == item.source))
            if old is None or old.sha256 != item.digest or old.status != "ready":
                return False
            if old.groups != groups or old.attributes != attributes:
                old.groups, old.attributes = groups, attributes
                old.updated_at = int(time.time())
                self._bump(s, rec.id)
                report.updated.append(item.source)
            else:
                report.unchanged.append(item.source)
            return True

    def _commit(self, rec: KbRecord, item: _Item, groups: list[str], attributes: dict,
                chunks: list, vectors: np.ndarray, report: IngestReport) -> None:
        now = int(time.time())
        with self.db.session() as s:  # one transaction: the document and all its chunks
            old = s.scalar(select(KbDocument).where(KbDocument.kb_id == rec.id,
                                                    KbDocument.source == item.source))
            if old is not None:
                s.execute(delete(KbChunk).where(KbChunk.doc_id == old.id))
                old.sha256, old.groups, old.attributes = item.digest, groups, attributes
                old.status, old.n_chunks, old.updated_at, old.error = "ready", len(chunks), now, None
                doc_id = old.id
                report.updated.append(item.source)
            else:
                doc_id = new_id("file-")
                s.add(KbDocument(id=doc_id, kb_id=rec.id, source=item.source, sha256=item.digest,
                                 groups=groups, attributes=attributes, status="ready",
                                 n_chunks=len(chunks), created_at=now, updated_at=now))
                report.added.append(item.source)
            s.add_all(KbChunk(kb_id=rec.id, doc_id=doc_id, idx=c.index, text=c.text,
                              heading_path=c.heading_path, pages=c.pages, start=c.start,
                              end=c.end, n_tokens=c.n_tokens, vector=v.astype(np.float32).tobytes(),
                              norm=float(np.linalg.norm(v))) for c, v in zip(chunks, vectors))
            self._bump(s, rec.id)
        report.chunks += len(chunks)

    @staticmethod
    def _bump(s, kb_id: str) -> None:
        s.execute(update(KbRecord).where(KbRecord.id == kb_id).values(
            version=KbRecord.version + 1))

    def remove(self, kb: str, source: str) -> bool:
        rec = self.get(kb)
        with self.db.session() as s:
            doc = s.scalar(select(KbDocument).where(KbDocument.kb_id == rec.id,
                                                    (KbDocument.source == source) |
                                                    (KbDocument.id == source)))
            if doc is None:
                return False
            s.execute(delete(KbChunk).where(KbChunk.doc_id == doc.id))
            s.delete(doc)
            self._bump(s, rec.id)
        return True

    def sync(self, kb: str, folder: str | Path, groups: list[str] | None = None,
             attributes: dict | None = None, progress: Progress | None = None) -> IngestReport:
        """Make the documents under ``folder`` equal to its files: add, update, delete."""
        root = Path(folder).resolve()
        if not root.is_dir():
            raise InvalidRequest(f"{root}: not a folder", param="path")
        report = self.add(kb, [root], groups, attributes, progress)
        present = {str(p) for p in expand([root])}
        for d in self.documents(kb):
            if d.source.startswith(str(root) + "/") and d.source not in present:
                self.remove(kb, d.source)
                report.deleted.append(d.source)
        return report

    # -- search ------------------------------------------------------------------------------
    def index(self, kb: str) -> tuple[KbRecord, KbIndex]:
        rec = self.get(kb)
        with self.db.session() as s:
            return rec, CACHE.get(s, rec.id, rec.version, self._dir(rec.id) / "index")

    def search(self, kb: str, query: str, *, groups: Iterable[str] | None = (),
               filters: dict | None = None, k: int = 10, mode: str | None = None,
               weight: float | None = None, score_threshold: float = 0.0,
               embedding_model: str | None = None, reranker=None) -> list[Hit]:
        """Top ``k`` chunks for ``query``. ``groups``: the caller's groups (documents with no
        groups are public); ``None`` means an unrestricted (administrative) search."""
        from afinar.rag.filters import validate_filter
        from afinar.rag.fusion import SCORE_KINDS, fuse

        if not query.strip():
            raise InvalidRequest("query is empty", param="query")
        if not 1 <= k <= 100:
            raise InvalidRequest("max_num_results must be 1..100", param="max_num_results")
        if filters is not None:
            validate_filter(filters)
        rec, idx = self.index(kb)
        mode = mode or rec.info.get("fusion_mode", "hybrid")
        if embedding_model and embedding_model != rec.embedding_model:
            raise InvalidRequest(f"knowledge base {rec.name} was embedded with "
                                 f"{rec.embedding_model}, not {embedding_model}", param="model")
        allowed = idx.mask(None if groups is None else frozenset(groups), filters)
        n_cand = max(50, 5 * k)
        dense = lex = qv = None
        if mode in ("hybrid", "weighted", "dense"):
            qv = get_embedder(rec.embedding_model, self.settings).encode([query])[0]
            dense = idx.dense(qv, allowed, n_cand)
        if mode in ("hybrid", "weighted", "lexical"):
            lex = idx.lexical(query, allowed, n_cand)
        if dense is None and lex is None:
            raise InvalidRequest("mode must be hybrid, weighted, dense or lexical", param="mode")
        if weight is None:
            weight = float(rec.info.get("fusion_weight", 0.5))
        cosine = (lambda i: float(idx.vectors[i] @ qv)) if qv is not None else None
        ranked = [f for f in fuse(dense, lex, mode, weight, cosine)
                  if f.relevance >= score_threshold and (f.relevance > 0 or score_threshold <= 0)]
        kind = SCORE_KINDS[mode]
        if reranker is None:
            return self._hits(idx, ranked[:k], kind)
        # rerank a wider pool; the ACL mask was already applied to it
        return reranker.rerank(query, self._hits(idx, ranked[:max(k, 3 * k)], kind))[:k]

    def _hits(self, idx: KbIndex, ranked, kind: str) -> list[Hit]:
        if not ranked:
            return []
        rowids = [int(idx.rowids[f.index]) for f in ranked]
        with self.db.session() as s:
            rows = {c.rowid: c for c in s.scalars(select(KbChunk).where(
                KbChunk.rowid.in_(rowids)))}
        out = []
        for f, rid in zip(ranked, rowids):
            c, doc = rows[rid], idx.docs[int(idx.doc_of[f.index])]
            out.append(Hit(rid, doc.id, doc.source, c.text, float(f.score), c.heading_path,
                           c.pages, c.start, c.end, doc.attributes, f.dense_score,
                           f.lexical_score, f.dense_rank, f.lexical_rank, kind))
        return out

    def tune_fusion(self, kb: str, labelled: list[tuple[str, set[str]]], groups=None,
                    k: int = 10) -> dict[str, Any]:
        """Pick the fusion for this base on a labelled set of (query, relevant sources): nDCG@k
        of RRF and of the weighted sum for weights 0, 0.1, ..., 1; the best is stored and used
        by default from then on."""
        import math

        if not labelled:
            raise InvalidRequest("the labelled set is empty", param="file")

        def ndcg(hits, rel):
            seen, ranked = set(), []
            for h in hits:
                if h.source not in seen:
                    seen.add(h.source)
                    ranked.append(h.source)
            dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in rel)
            ideal = sum(1 / math.log2(i + 2) for i in range(min(len(rel), k)))
            return dcg / ideal if ideal else 0.0

        def score(mode, w=None):
            return sum(ndcg(self.search(kb, q, groups=groups, k=k, mode=mode, weight=w), rel)
                       for q, rel in labelled) / len(labelled)

        table = {"hybrid": score("hybrid"), "dense": score("dense"), "lexical": score("lexical")}
        for w in [i / 10 for i in range(11)]:
            table[f"weighted:{w:.1f}"] = score("weighted", w)
        best = max(table, key=lambda m: (table[m], m == "hybrid"))
        def choose(info: dict) -> None:
            info["fusion_mode"] = best.split(":")[0]
            if best.startswith("weighted:"):
                info["fusion_weight"] = float(best.split(":")[1])

        self.update_info(kb, choose)
        return {"best": best, "ndcg": table}

    # -- consistency -----------------------------------------------------------------------
    def check(self, kb: str, repair: bool = False) -> dict[str, Any]:
        """Do records, the vector index and the lexical index agree? ``repair`` fixes drift."""
        rec = self.get(kb)
        folder = self._dir(rec.id) / "index"
        problems: list[str] = []
        with self.db.session() as s:
            docs = {d.id: d for d in s.scalars(select(KbDocument).where(
                KbDocument.kb_id == rec.id))}
            counts = dict(s.execute(select(KbChunk.doc_id, func.count()).where(
                KbChunk.kb_id == rec.id).group_by(KbChunk.doc_id)).all())
            orphans = [d for d in counts if d not in docs]
            if orphans:
                problems.append(f"{sum(counts[d] for d in orphans)} chunks of "
                                f"{len(orphans)} unknown documents")
            for d in docs.values():
                if counts.get(d.id, 0) != d.n_chunks or d.status != "ready":
                    problems.append(f"{d.source}: record says {d.n_chunks} chunks "
                                    f"({d.status}), {counts.get(d.id, 0)} stored")
            truth = KbIndex.build(s, rec.id, rec.version, searchable=False)
            disk = KbIndex.load(folder, s, rec.id)
        if disk is None and folder.exists():
            problems.append("the index files are damaged")
        elif disk is None:
            problems.append("the index files are missing")
        else:
            if disk.version != rec.version:
                problems.append(f"the index is at version {disk.version}, records at "
                                f"{rec.version}")
            if disk.fingerprint() != truth.fingerprint():
                problems.append("the vector index differs from the records")
            n_lex = int(getattr(disk.bm25, "scores", {}).get("num_docs", disk.size)
                        if disk.size else 0)
            if n_lex != truth.size:
                problems.append(f"the lexical index has {n_lex} chunks, records {truth.size}")
        if repair and problems:
            with self.db.session() as s:
                if orphans:
                    s.execute(delete(KbChunk).where(KbChunk.doc_id.in_(orphans)))
                for d in s.scalars(select(KbDocument).where(KbDocument.kb_id == rec.id)):
                    n = counts.get(d.id, 0)
                    if d.status != "ready" or n != d.n_chunks:
                        s.execute(delete(KbChunk).where(KbChunk.doc_id == d.id))
                        s.delete(d)  # re-ingest it with kb add / kb sync
                self._bump(s, rec.id)
            CACHE.drop(rec.id)
            self.index(kb)
        return {"ok": not problems, "problems": problems, "repaired": bool(repair and problems),
                "documents": len(docs), "chunks": truth.size, "version": rec.version}
