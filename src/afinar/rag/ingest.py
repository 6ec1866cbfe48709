"""Ingestion into a knowledge base: add files, folders and texts, keep a folder in sync, remove
documents.

A document is identified by its source path and content hash: re-adding an unchanged file does
nothing, a changed file replaces its chunks in one transaction, a deleted one is removed. Each
document is committed on its own (``KbIngestion._commit``), so an interrupted ingestion resumes by
running it again, without duplicates. Reading and chunking run in a producer thread, a few
documents ahead of the batch being embedded. ``reembed`` re-embeds a base's chunks with another
embedding backend (its queries follow, ``embeddings.for_base``).
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update

from afinar.errors import InvalidRequest
from afinar.ids import new_id
from afinar.rag.chunking import chunk_document, embedding_token_counter, resolve_sizes
from afinar.rag.document import DocumentBuilder
from afinar.rag.embeddings import check_backend, for_base, get_embedder
from afinar.rag.loaders import load_document, supported_extensions
from afinar.rag.records import KbRecords
from afinar.store.blobs import sha256_file
from afinar.store.tables import KbChunk, KbDocument, KbRecord

Progress = Callable[[dict], None]


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0


EMBED_BATCH = 128  # chunks embedded together across documents (batched by length)


@dataclass
class _Item:
    source: str
    path: Path | None = None
    text: str | None = None
    digest: str | None = None


def _text_document(item: _Item):
    b = DocumentBuilder(item.source)
    for para in (p for p in item.text.split("\n\n") if p.strip()):
        b.add("paragraph", para.strip())
    return b.build()


PREFETCH = 8  # documents read and chunked ahead of the one being embedded


def _prepared(items: list[_Item], prepare: Callable[[_Item, IngestReport], Any]
              ) -> Iterator[tuple[_Item, IngestReport, Any]]:
    """``(item, its report entries, prepare(item))`` in order, computed by one producer thread
    at most ``PREFETCH`` items ahead of the consumer. An exception in ``prepare`` is raised
    here, at its item; a consumer that stops early (an exception, ``close``) stops the
    producer."""
    out: queue.Queue = queue.Queue(maxsize=PREFETCH)
    stop = threading.Event()
    end = object()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                out.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                side = IngestReport()
                if not put((item, side, prepare(item, side))):
                    return
        except BaseException as e:  # noqa: BLE001  (handed to the consumer, raised there)
            put(e)
            return
        put(end)

    worker = threading.Thread(target=produce, name="afinar-ingest-reader", daemon=True)
    worker.start()
    try:
        while (x := out.get()) is not end:
            if isinstance(x, BaseException):
                raise x
            yield x
    finally:
        stop.set()
        worker.join()


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


class KbIngestion(KbRecords):
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
        is fastest on full batches), and commit each document in its own transaction. A
        producer thread reads and chunks the next documents while a batch embeds
        (``_prepared``), so parsing costs no wall time when embedding is the slower part."""
        rec = self.get(kb)
        emb = for_base(rec, self.settings)
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

        def prepare(item: _Item, side: IngestReport):
            """Digest, the unchanged check, load and chunk: the producer's part of one item."""
            try:
                item.digest = item.digest or (sha256_file(item.path) if item.path else
                                              hashlib.sha256(item.text.encode()).hexdigest())
                if not self._unchanged(rec, item, groups, attributes, side):
                    doc = load_document(item.path) if item.path else _text_document(item)
                    return chunk_document(doc, count, max_tok, overlap)
            except InvalidRequest as e:
                side.failed.append((item.source, e.message))
            return None

        with closing(_prepared(items, prepare)) as stream:
            for i, (item, side, chunks) in enumerate(stream):
                self._take(report, pending, item, side, chunks, flush)
                if progress:
                    progress({"files": i + 1, "total": len(items), "chunks": report.chunks,
                              "chunks_per_s": report.chunks / max(time.perf_counter() - t0,
                                                                  1e-9),
                              "source": item.source})
        flush()
        if report.added or report.updated:
            self.index(kb)  # build the indexes now, not on the first query
        report.seconds = time.perf_counter() - t0
        return report

    @staticmethod
    def _take(report: IngestReport, pending: list, item: _Item, side: IngestReport, chunks,
              flush: Callable[[], None]) -> None:
        """One prepared item: its report entries, its chunks queued, a full batch embedded."""
        for name in ("unchanged", "updated", "failed"):
            getattr(report, name).extend(getattr(side, name))
        if chunks is not None:
            pending.append((item, chunks))
        if sum(len(c) for _, c in pending) >= EMBED_BATCH:
            flush()

    def reembed(self, kb: str, backend: str, progress: Progress | None = None) -> int:
        """Every chunk of the base embedded again with ``backend``, written with the backend's
        name in one transaction (queries then use it too); the number of chunks."""
        check_backend(backend, param="backend")
        rec = self.get(kb)
        emb = get_embedder(rec.embedding_model, self.settings, backend)
        with self.db.session() as s:
            rows = list(s.execute(select(KbChunk.rowid, KbChunk.text).where(
                KbChunk.kb_id == rec.id).order_by(KbChunk.rowid)))
        vecs = emb.encode([t for _, t in rows], progress=progress and (
            lambda n: progress({"chunks": n, "total": len(rows)})))
        with self.db.session() as s:
            s.execute(update(KbChunk), [
                {"rowid": cid, "vector": v.astype(np.float32).tobytes(),
                 "norm": float(np.linalg.norm(v))} for (cid, _), v in zip(rows, vecs)])
            r = s.get(KbRecord, rec.id)
            r.info = {**(r.info or {}), "embed_backend": backend}
            self._bump(s, rec.id)
        if rows:
            self.index(kb)
        return len(rows)

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
