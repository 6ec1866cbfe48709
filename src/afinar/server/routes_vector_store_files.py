"""The files and file batches of a vector store (included by ``routes_vector_stores``).

A stored file (``POST /v1/files``) is ingested when it is added: parsed by its filename's
extension, chunked with the store's strategy, embedded, and committed before the response, so
files and batches are ``completed`` (or ``failed`` with ``last_error``) when returned. A batch's
``cancel`` therefore has nothing left to stop and returns the batch as it is. A per-file
``chunking_strategy`` is accepted but a store chunks all its files one way (set it when creating
the store); each file object reports the strategy really used. Who may read a file's document is
the file's readers (``afinar.store.access``): a ``groups`` attribute (comma-separated) changes
the file's groups everywhere, by its uploader or an admin only; a caller sees and changes only
the files it may read, and removes one from a store only as the store's creator, the file's
uploader or an admin.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select

from afinar.errors import InvalidRequest, NotFound
from afinar.ids import new_id
from afinar.rag.chunking import ChunkingStrategy
from afinar.rag.kb import KnowledgeBases
from afinar.server import vector_stores as vs
from afinar.server.common import LOCAL, Auth, Caller, Forbidden
from afinar.server.vector_stores import Attributes, listing
from afinar.store.files import Files
from afinar.store.tables import KbChunk

router = APIRouter(dependencies=[Auth])
Status = Literal["in_progress", "completed", "failed", "cancelled"]


class AddFile(BaseModel):
    file_id: str
    attributes: Attributes = None
    chunking_strategy: dict[str, Any] | None = None


class UpdateFile(BaseModel):
    attributes: Attributes = None


class CreateBatch(BaseModel):
    file_ids: list[str] | None = Field(None, max_length=2000)
    files: list[AddFile] | None = Field(None, max_length=2000)
    attributes: Attributes = None
    chunking_strategy: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> CreateBatch:
        if (self.file_ids is None) == (self.files is None):
            raise ValueError("give either file_ids or files")
        return self


def _kbs(request: Request) -> KnowledgeBases:
    return KnowledgeBases(request.app.state.settings)


def _check(attributes: dict | None, chunking: dict | None) -> dict:
    ChunkingStrategy.parse(chunking)  # validated; the store's strategy is the one used
    return attributes or {}


def _one(kbs: KnowledgeBases, store_id: str, file_id: str, who: Caller) -> dict:
    rec = vs.store(kbs, store_id, who)
    docs = vs.documents(kbs, rec, who)
    if file_id in docs:
        return vs.file_object(kbs, rec, file_id, *docs[file_id])
    if vs.failed_entry(rec, file_id, who, Files(kbs.settings)) is not None:
        return vs.file_object(kbs, rec, file_id, None)
    raise NotFound(f"no file {file_id!r} in vector store {rec.id}", param="file_id")


def _files_page(request: Request, store_id: str, only: set[str] | None, after: str | None,
                before: str | None, limit: int, order: str, status: str | None,
                who: Caller) -> dict:
    kbs = _kbs(request)
    items = [f for f in vs.file_objects(kbs, vs.store(kbs, store_id, who), who)
             if (only is None or f["id"] in only) and (status is None or f["status"] == status)]
    return listing(items, after, before, limit, order)


@router.post("/vector_stores/{vector_store_id}/files")
def add_file(vector_store_id: str, body: AddFile, request: Request, who: Caller = Auth) -> dict:
    kbs = _kbs(request)
    rec = vs.store(kbs, vector_store_id, who)
    vs.ingest(kbs, rec, [(body.file_id, _check(body.attributes, body.chunking_strategy))], who)
    return _one(kbs, rec.id, body.file_id, who)


@router.get("/vector_stores/{vector_store_id}/files")
def list_files(vector_store_id: str, request: Request, after: str | None = None,
               before: str | None = None, limit: int = 20,
               order: Literal["asc", "desc"] = "desc", filter: Status | None = None,
               who: Caller = Auth) -> dict:
    return _files_page(request, vector_store_id, None, after, before, limit, order, filter,
                       who)


@router.get("/vector_stores/{vector_store_id}/files/{file_id}")
def retrieve_file(vector_store_id: str, file_id: str, request: Request,
                  who: Caller = Auth) -> dict:
    return _one(_kbs(request), vector_store_id, file_id, who)


@router.post("/vector_stores/{vector_store_id}/files/{file_id}")
def update_file(vector_store_id: str, file_id: str, body: UpdateFile, request: Request,
                who: Caller = Auth) -> dict:
    """New attributes for a file of the store. A ``groups`` attribute changes who may read the
    file, everywhere (its uploader or an admin only); without one its readers stay as they
    are (``afinar.store.access``)."""
    kbs = _kbs(request)
    rec = vs.store(kbs, vector_store_id, who)
    _one(kbs, rec.id, file_id, who)  # 404 when unknown or not readable
    doc = vs.documents(kbs, rec, who).get(file_id)
    if doc is None:
        raise InvalidRequest(f"{file_id} failed to parse: there is nothing to update; add it "
                             "again", param="file_id")
    attributes = body.attributes or {}
    files = Files(kbs.settings)
    frec = files.get(file_id) if vs.is_file_id(doc[0].source) and _exists(files, file_id) \
        else None
    if frec is None:  # a document the CLI added (or whose file was deleted): its own groups
        if vs.groups_attribute(attributes) is not None:
            who.require_admin("change the groups of a document that has no stored file")
            groups = vs.groups_attribute(attributes)
        else:
            groups = None
    else:
        recs = {file_id: frec}
        vs.apply_groups(files, recs, [(file_id, attributes)], who)
        attributes, groups = vs.doc_attributes(attributes, recs[file_id]), None
    kbs.set_attributes(rec.id, doc[0].id, attributes, groups=groups)
    return _one(kbs, rec.id, file_id, LOCAL)  # shown even if the caller just gave it away


def _exists(files: Files, file_id: str) -> bool:
    try:
        files.get(file_id)
    except NotFound:
        return False
    return True


@router.delete("/vector_stores/{vector_store_id}/files/{file_id}")
def delete_file(vector_store_id: str, file_id: str, request: Request,
                who: Caller = Auth) -> dict:
    kbs = _kbs(request)
    rec = vs.store(kbs, vector_store_id, who)
    files = Files(kbs.settings)
    doc = vs.documents(kbs, rec, who).get(file_id)
    if doc is None and vs.failed_entry(rec, file_id, who, files) is None:
        raise NotFound(f"no file {file_id!r} in vector store {rec.id}", param="file_id")
    uploader = files.get(file_id).owner_key_id if _exists(files, file_id) else None
    if not (who.owns(rec.owner_key_id) or who.owns(uploader)):
        raise Forbidden(f"only the key that created vector store {rec.id}, the key that "
                        f"uploaded {file_id} or an admin may remove it from the store")
    if doc is not None:
        kbs.remove(rec.id, doc[0].id)
    if file_id in (rec.info or {}).get("files", {}):
        vs.update_info(kbs, rec.id, lambda info: info.get("files", {}).pop(file_id, None))
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


@router.get("/vector_stores/{vector_store_id}/files/{file_id}/content")
def file_content(vector_store_id: str, file_id: str, request: Request,
                 who: Caller = Auth) -> dict:
    """The parsed text, as the store's chunks (heading path line, then the body)."""
    kbs = _kbs(request)
    rec = vs.store(kbs, vector_store_id, who)
    docs = vs.documents(kbs, rec, who)
    if file_id not in docs:
        raise NotFound(f"no parsed file {file_id!r} in vector store {rec.id}", param="file_id")
    doc = docs[file_id][0]
    with kbs.db.session() as s:
        texts = list(s.scalars(select(KbChunk.text).where(KbChunk.doc_id == doc.id)
                               .order_by(KbChunk.idx)))
    return {"object": "vector_store.file_content.page", "file_id": file_id,
            "data": [{"type": "text", "text": t} for t in texts], "has_more": False,
            "next_page": None}


def _batch(kbs: KnowledgeBases, store_id: str, batch_id: str, who: Caller) -> dict:
    rec = vs.store(kbs, store_id, who)
    b = (rec.info or {}).get("batches", {}).get(batch_id)
    if b is None:
        raise NotFound(f"no file batch {batch_id!r} in vector store {rec.id}", param="batch_id")
    mine = set(b["file_ids"])
    files = [f for f in vs.file_objects(kbs, rec, who) if f["id"] in mine]
    return {"id": batch_id, "object": "vector_store.files_batch", "created_at": b["created_at"],
            "vector_store_id": rec.id, "status": "completed", "file_counts": vs.counts(files)}


@router.post("/vector_stores/{vector_store_id}/file_batches")
def create_batch(vector_store_id: str, body: CreateBatch, request: Request,
                 who: Caller = Auth) -> dict:
    kbs = _kbs(request)
    rec = vs.store(kbs, vector_store_id, who)
    common = _check(body.attributes, body.chunking_strategy)
    items = [(f, common) for f in body.file_ids or []]
    for f in body.files or []:
        own = _check(f.attributes, f.chunking_strategy)
        items.append((f.file_id, own if f.attributes is not None else common))
    if not items:
        raise InvalidRequest("the batch has no files", param="file_ids")
    vs.ingest(kbs, rec, items, who)
    batch_id = new_id("vsfb_")
    vs.update_info(kbs, rec.id, lambda info: info.setdefault("batches", {}).update(
        {batch_id: {"created_at": int(time.time()), "file_ids": [f for f, _ in items]}}))
    return _batch(kbs, rec.id, batch_id, who)


@router.get("/vector_stores/{vector_store_id}/file_batches/{batch_id}")
def retrieve_batch(vector_store_id: str, batch_id: str, request: Request,
                   who: Caller = Auth) -> dict:
    return _batch(_kbs(request), vector_store_id, batch_id, who)


@router.post("/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel")
def cancel_batch(vector_store_id: str, batch_id: str, request: Request,
                 who: Caller = Auth) -> dict:
    """Ingestion finished before the batch was returned: nothing is left to cancel."""
    return _batch(_kbs(request), vector_store_id, batch_id, who)


@router.get("/vector_stores/{vector_store_id}/file_batches/{batch_id}/files")
def batch_files(vector_store_id: str, batch_id: str, request: Request, after: str | None = None,
                before: str | None = None, limit: int = 20,
                order: Literal["asc", "desc"] = "desc", filter: Status | None = None,
                who: Caller = Auth) -> dict:
    kbs = _kbs(request)
    rec = vs.store(kbs, vector_store_id, who)
    b = (rec.info or {}).get("batches", {}).get(batch_id)
    if b is None:
        raise NotFound(f"no file batch {batch_id!r} in vector store {rec.id}", param="batch_id")
    return _files_page(request, rec.id, set(b["file_ids"]), after, before, limit, order, filter,
                       who)
