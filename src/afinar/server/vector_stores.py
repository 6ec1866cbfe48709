"""What the vector-store routes share: OpenAI's vector store, file and search-result objects over
afinar knowledge bases, their bookkeeping in ``KbRecord.info``, ingestion of stored files, and
search (also used by the ``file_search`` tool of ``/v1/responses``).

A vector store *is* a knowledge base (``vs_…`` ids). ``KbRecord.info`` keeps what OpenAI has and
afinar's records lack: the display ``name``, ``description``, ``metadata``, ``expires_after``,
``last_active_at``, the resolved ``chunking_strategy``, and per file its ``filename`` and
``created_at`` (plus ``last_error`` for a file that could not be ingested, which has no document)
and the ``batches``. A document added through the API has its file id as ``source``; one added
with the CLI is listed under its document id (``file-…`` as well).

Access control: one rule, ``afinar.store.access`` (read it there). A document made from a
stored file has exactly that file's readers, in every store; the ``groups`` attribute changes
the file's groups (its uploader or an admin only, to groups a non-admin holds); without it the
readers stay as they are. Searches run with the caller's principals inside retrieval
(``KnowledgeBases.search`` masks chunks before ranking); admins of the project read everything.
Listings, counts and file objects show only what the caller may read; the rest is 404. A store
belongs to a project (other projects: 404) and may be renamed or deleted only by the key that
created it or an admin.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator
from sqlalchemy import func, select

from afinar.errors import InvalidRequest, NotFound
from afinar.rag.chunking import resolve_sizes
from afinar.rag.kb import KnowledgeBases
from afinar.rag.search import Hit
from afinar.server.common import Caller, page, readable_file
from afinar.store.access import check_groups_change, file_readers, set_file_groups
from afinar.store.files import Files
from afinar.store.keys import parse_groups
from afinar.store.tables import FileRecord, KbChunk, KbDocument, KbRecord

TOUCH_EVERY_S = 60  # last_active_at is refreshed by searches at most this often


def check_map(value: dict | None) -> dict | None:
    """OpenAI's limits on metadata and attributes: 16 keys of <= 64 characters, strings of
    <= 512 characters."""
    if value is not None and (len(value) > 16 or any(len(k) > 64 for k in value)):
        raise ValueError("at most 16 keys, each at most 64 characters")
    if value is not None and any(isinstance(v, str) and len(v) > 512 for v in value.values()):
        raise ValueError("string values are at most 512 characters")
    return value


Metadata = Annotated[dict[str, str] | None, AfterValidator(check_map)]
Attributes = Annotated[dict[str, bool | int | float | str] | None, AfterValidator(check_map)]


def listing(items: list[dict], after: str | None, before: str | None, limit: int,
            order: str) -> dict:
    """A cursor page in ``created_at`` order (``desc`` by default), with ``after``/``before``."""
    items = sorted(items, key=lambda x: (x["created_at"], x["id"]), reverse=order != "asc")
    if before:
        ids = [x["id"] for x in items]
        items = items[:ids.index(before)] if before in ids else []
    return page(items, after, limit)


def store(kbs: KnowledgeBases, store_id: str, who: Caller | None = None) -> KbRecord:
    """The knowledge base behind a vector store id; internal ones (memories) are not stores,
    nor (with ``who``) another project's."""
    try:
        rec = kbs.get(store_id)
    except NotFound:
        rec = None
    if rec is None or rec.name.startswith("_") or (who is not None and
                                                   not who.in_project(rec.project_id)):
        raise NotFound(f"no vector store {store_id!r}", param="vector_store_id")
    return rec


def check_stores(kbs: KnowledgeBases, store_ids: list[str] | None, who: Caller) -> None:
    """The ``vector_store_ids`` of a ``file_search`` tool: each one a store of the caller's
    project (404 otherwise)."""
    for sid in store_ids or []:
        store(kbs, str(sid), who)


def is_file_id(source: str) -> bool:
    return source.startswith("file-") and "/" not in source


def file_id_of(source: str, doc_id: str) -> str:
    return source if is_file_id(source) else doc_id


def update_info(kbs: KnowledgeBases, kb_id: str, change: Callable[[dict], None]) -> dict:
    return kbs.update_info(kb_id, change)


def chunking_strategy(kbs: KnowledgeBases, rec: KbRecord) -> dict[str, Any]:
    """The sizes really used, as OpenAI's static strategy (``auto`` resolved for the model)."""
    if "chunking_strategy" in (rec.info or {}):
        return rec.info["chunking_strategy"]
    from afinar.rag.embeddings import get_embedder

    max_tokens = get_embedder(rec.embedding_model, kbs.settings).max_tokens
    size, overlap, _ = resolve_sizes(rec.chunking, max_tokens)
    return {"type": "static", "static": {"max_chunk_size_tokens": size,
                                         "chunk_overlap_tokens": overlap}}


def documents(kbs: KnowledgeBases, rec: KbRecord, who: Caller
              ) -> dict[str, tuple[KbDocument, int]]:
    """file id -> (document, usage bytes: chunk text plus float32 vectors) for the documents
    the caller may read (to the caller, the others do not exist)."""
    with kbs.db.session() as s:
        docs = list(s.scalars(select(KbDocument).where(KbDocument.kb_id == rec.id)))
        sizes = dict(s.execute(select(KbChunk.doc_id, func.sum(func.length(KbChunk.text)))
                               .where(KbChunk.kb_id == rec.id).group_by(KbChunk.doc_id)).all())
    return {file_id_of(d.source, d.id): (d, int(sizes.get(d.id) or 0)
                                        + d.n_chunks * rec.dimensions * 4)
            for d in docs if who.may_read(d.groups)}


def file_object(kbs: KnowledgeBases, rec: KbRecord, fid: str, doc: KbDocument | None,
                usage: int = 0) -> dict[str, Any]:
    entry = (rec.info or {}).get("files", {}).get(fid, {})
    if doc is not None:
        status = "completed" if doc.status == "ready" else "in_progress"
    else:
        status = entry.get("status", "failed")
    return {"id": fid, "object": "vector_store.file",
            "created_at": entry.get("created_at") or (doc.created_at if doc else 0),
            "vector_store_id": rec.id, "status": status,
            "last_error": None if doc is not None else entry.get("last_error"),
            "usage_bytes": usage,
            "attributes": dict(doc.attributes or {}) if doc else entry.get("attributes", {}),
            "chunking_strategy": chunking_strategy(kbs, rec)}


def failed_entry(rec: KbRecord, fid: str, who: Caller, files: Files | None = None
                 ) -> dict | None:
    """The bookkeeping of a file that could not be ingested (no document), if the caller may
    read it: by its file's readers now (``files`` given), else those recorded."""
    e = (rec.info or {}).get("files", {}).get(fid)
    if e is None or e.get("status") != "failed":
        return None
    readers = e.get("groups")
    if files is not None:
        with files.db.session() as s:
            frec = s.get(FileRecord, fid)
        readers = file_readers(frec) if frec is not None else readers
    return e if who.may_read(readers) else None


def file_objects(kbs: KnowledgeBases, rec: KbRecord, who: Caller) -> list[dict[str, Any]]:
    docs = documents(kbs, rec, who)
    files = Files(kbs.settings)
    failed = [f for f in (rec.info or {}).get("files", {})
              if f not in docs and failed_entry(rec, f, who, files) is not None]
    return ([file_object(kbs, rec, f, d, n) for f, (d, n) in docs.items()]
            + [file_object(kbs, rec, f, None) for f in failed])


def counts(files: list[dict[str, Any]]) -> dict[str, int]:
    out = {k: sum(f["status"] == k for f in files)
           for k in ("in_progress", "completed", "failed", "cancelled")}
    return {**out, "total": len(files)}


def store_object(kbs: KnowledgeBases, rec: KbRecord, who: Caller) -> dict[str, Any]:
    """OpenAI's vector store; sizes and counts cover the files the caller may read."""
    info = rec.info or {}
    files = file_objects(kbs, rec, who)
    last = info.get("last_active_at") or rec.created_at
    exp = info.get("expires_after")
    expires_at = last + exp["days"] * 86400 if exp else None
    return {"id": rec.id, "object": "vector_store", "created_at": rec.created_at,
            "name": info.get("name", rec.name), "description": info.get("description"),
            "usage_bytes": sum(f["usage_bytes"] for f in files), "file_counts": counts(files),
            "status": "in_progress" if info.get("creating") else
            "expired" if expires_at and time.time() > expires_at else "completed",
            "expires_after": exp, "expires_at": expires_at, "last_active_at": last,
            "metadata": info.get("metadata") or {}}


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or no hard links: copy
        shutil.copyfile(src, dst)


def groups_attribute(attributes: dict | None, param: str = "attributes.groups"
                     ) -> list[str] | None:
    """The ``groups`` attribute as group names (``None`` when absent; ``""``: none)."""
    if not attributes or "groups" not in attributes:
        return None
    value = attributes["groups"]
    if not isinstance(value, str):
        raise InvalidRequest("the groups attribute is a string of comma-separated group names",
                             param=param)
    return parse_groups(value, param)


def apply_groups(files: Files, recs: dict, items: list[tuple[str, dict]], who: Caller) -> None:
    """The ``groups`` attributes of ``items`` as changes of their files' groups: every change
    checked first (``access.check_groups_change``), then made; ``recs`` (file id -> record)
    are refreshed."""
    changes = {}
    for fid, attrs in items:
        groups = groups_attribute(attrs)
        if groups is not None and check_groups_change(who, recs[fid], groups):
            changes[fid] = groups
    for fid, groups in changes.items():
        set_file_groups(files.db, fid, groups)
        recs[fid] = files.get(fid)


def doc_attributes(attrs: dict | None, rec) -> dict:
    """A document's attributes: the caller's, with ``groups`` showing the file's groups once it
    is restricted (the same in every store, for filters too)."""
    out = dict(attrs or {})
    if rec.groups is not None:
        out["groups"] = ",".join(rec.groups)
    return out


def ingest(kbs: KnowledgeBases, rec: KbRecord, items: list[tuple[str, dict]],
           who: Caller) -> None:
    """Add stored files ``(file_id, attributes)`` for the caller; a file that cannot be parsed
    is recorded as ``failed`` with its ``last_error``. Unknown (or unreadable) file ids and bad
    ``groups`` fail the request before any ingestion.

    The loaders pick a parser by extension and blobs have none, so each blob is linked as
    ``<file_id><original suffix>`` in a staging folder removed when ingestion ends; its source
    stays the file id. Each file's entry is written ``in_progress`` before its document, so a
    crash in between is settled at the next start (``vector_store_recovery``)."""
    from afinar.server import vector_store_recovery as recovery

    files = Files(kbs.settings)
    recs = {fid: readable_file(who, files, fid) for fid, _ in items}
    apply_groups(files, recs, items, who)
    acl = {fid: file_readers(r) for fid, r in recs.items()}  # the one rule: the file's readers
    items = [(fid, doc_attributes(attrs, recs[fid])) for fid, attrs in items]
    batches: dict[str, list[str]] = {}
    for fid, attrs in items:
        key = json.dumps([attrs or {}, acl[fid]], sort_keys=True)
        batches.setdefault(key, []).append(fid)
    errors: dict[str, str] = {}
    now = int(time.time())

    def begin(info: dict) -> None:
        known = info.setdefault("files", {})
        for fid, frec in recs.items():
            old = known.get(fid, {})
            known[fid] = {"filename": frec.filename, "created_at": old.get("created_at", now),
                          "groups": acl[fid], "status": "in_progress",
                          "owner": recovery.owner()}

    update_info(kbs, rec.id, begin)
    try:
        _ingest_staged(kbs, rec, files, recs, batches, errors, recovery.staging)
    except BaseException:
        recovery.settle_entries(kbs, rec.id, mine=set(recs))  # as far as it got
        raise
    attrs_of = dict(items)

    def record(info: dict) -> None:
        known = info.setdefault("files", {})
        for fid, frec in recs.items():
            entry = {"filename": frec.filename,
                     "created_at": known.get(fid, {}).get("created_at", now),
                     "groups": acl[fid]}
            if fid in errors:
                code = "unsupported_file" if "unsupported format" in errors[fid] else \
                    "invalid_file"
                entry.update(status="failed", attributes=attrs_of[fid] or {},
                             last_error={"code": code, "message": errors[fid]})
            known[fid] = entry

    update_info(kbs, rec.id, record)


def _ingest_staged(kbs: KnowledgeBases, rec: KbRecord, files: Files, recs: dict,
                   batches: dict[str, list[str]], errors: dict[str, str], staging) -> None:
    with staging(kbs.settings.home) as tmp:
        for key, fids in batches.items():
            attrs, groups = json.loads(key)
            paths: dict[Path, str] = {}
            for fid in dict.fromkeys(fids):
                p = Path(tmp) / f"{fid}{Path(recs[fid].filename).suffix.lower()}"
                _link(files.path(fid), p)
                paths[p.resolve()] = fid
            report = kbs.add(rec.id, list(paths), groups=groups, attributes=attrs,
                             sources=paths)
            errors.update(report.failed)


@dataclass
class Found:
    hit: Hit
    file_id: str
    filename: str

    def result(self) -> dict[str, Any]:
        """A ``vector_store.search_results`` item; ``ranking`` (an addition to OpenAI's shape)
        says which score ``score`` is (``rrf``, ``weighted``, ``cosine``, ``bm25``, ``rerank``)
        and what each retriever scored and ranked the chunk."""
        h = self.hit
        return {"file_id": self.file_id, "filename": self.filename, "score": h.score,
                "attributes": h.attributes or {},
                "content": [{"type": "text", "text": h.text}],
                "ranking": {"score": h.score_kind, "dense_score": h.dense_score,
                            "dense_rank": h.dense_rank, "lexical_score": h.lexical_score,
                            "lexical_rank": h.lexical_rank}}


def search(kbs: KnowledgeBases, store_ids: list[str], queries: list[str], *,
           groups: list[str] | None, filters: dict | None = None, k: int = 10,
           ranking_options: dict | None = None, load=None) -> list[Found]:
    """The best ``k`` chunks over stores and queries (a chunk found twice keeps its best score)
    among the documents ``groups`` may read (``Caller.search_groups``: ``None`` unrestricted).
    ``ranking_options.hybrid_search`` weights ask for a weighted sum of the two scores;
    ``ranking_options.ranker`` picks a reranker (``rag.rerank.for_ranker``; ``load``: the
    server's model loader, so the ``llm`` reranker uses the model already loaded)."""
    from afinar.rag.rerank import for_ranker

    ro = ranking_options or {}
    reranker = for_ranker(ro.get("ranker"), kbs.settings.reranker, load)
    hybrid = ro.get("hybrid_search") or {}
    mode, weight = None, None  # None: the store's fusion (``afinar kb tune-fusion``)
    if hybrid:
        ew, tw = float(hybrid.get("embedding_weight", 1)), float(hybrid.get("text_weight", 1))
        mode, weight = "weighted", ew / (ew + tw) if ew + tw > 0 else 0.5
    best: dict[tuple[str, int], Found] = {}
    for sid in store_ids:
        rec = store(kbs, sid)
        named = (rec.info or {}).get("files", {})
        for q in queries:
            for h in kbs.search(rec.id, q, groups=groups, filters=filters, k=k, mode=mode,
                                weight=weight, reranker=reranker,
                                score_threshold=float(ro.get("score_threshold") or 0.0)):
                key = (rec.id, h.chunk_id)
                if key not in best or best[key].hit.score < h.score:
                    fid = file_id_of(h.source, h.doc_id)
                    name = named.get(fid, {}).get("filename") or h.source.rsplit("/", 1)[-1]
                    best[key] = Found(h, fid, name)
        touch(kbs, rec)
    return sorted(best.values(), key=lambda f: -f.hit.score)[:k]


def touch(kbs: KnowledgeBases, rec: KbRecord) -> None:
    now = int(time.time())
    if now - int((rec.info or {}).get("last_active_at") or 0) >= TOUCH_EVERY_S:
        update_info(kbs, rec.id, lambda info: info.update(last_active_at=now))
