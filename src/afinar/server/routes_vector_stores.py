"""OpenAI's vector stores over afinar knowledge bases: create, list, retrieve, modify, delete and
search (the files and file batches of a store are in ``routes_vector_store_files``).

Ingestion is synchronous: a store created with ``file_ids`` (or a file or batch added) is
``completed`` when the response arrives, so the SDK's ``create_and_poll`` helpers return at
once. ``expires_after`` is stored and reported (``expires_at``, and ``status: "expired"`` past
it), but nothing is deleted automatically. ``rewrite_query`` is accepted and ignored (the
query is used as given).

Access control (``afinar.store.access``): a store belongs to the project of the key that created
it (other projects: 404); any key of the project sees it, only its creator or an admin may
rename or delete it. A search runs with the caller's principals inside retrieval (documents the
caller may not read are masked before ranking); admins of the project search everything.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from afinar.errors import InvalidRequest
from afinar.rag.kb import KnowledgeBases
from afinar.server import vector_stores as vs
from afinar.server.common import Auth, Caller
from afinar.server.schemas import Filter, RankingOptions, SearchQueries
from afinar.server.routes_vector_store_files import router as files_router
from afinar.server.vector_store_recovery import owner
from afinar.server.vector_stores import Metadata, listing

router = APIRouter(dependencies=[Auth])
router.include_router(files_router)
Name = Annotated[str | None, Field(None, max_length=256)]  # OpenAI's limits on names


class ExpiresAfter(BaseModel):
    anchor: Literal["last_active_at"]
    days: int = Field(ge=1, le=365)


class CreateStore(BaseModel):
    name: Name = None
    description: Annotated[str | None, Field(None, max_length=512)] = None
    file_ids: list[str] = Field(default_factory=list, max_length=500)
    metadata: Metadata = None
    chunking_strategy: dict[str, Any] | None = None
    expires_after: ExpiresAfter | None = None


class ModifyStore(BaseModel):
    name: Name = None
    metadata: Metadata = None
    expires_after: ExpiresAfter | None = None


class SearchRequest(BaseModel):  # OpenAI's schema (afinar.server.schemas), capped
    query: SearchQueries
    filters: Filter | None = None
    max_num_results: int = Field(10, ge=1, le=50)
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False


def kbs_of(request: Request) -> KnowledgeBases:
    return KnowledgeBases(request.app.state.settings)


@router.post("/vector_stores")
def create_store(body: CreateStore, request: Request, who: Caller = Auth) -> dict:
    kbs = kbs_of(request)
    rec = kbs.create(None, chunking=body.chunking_strategy, info={
        "name": body.name or "", "description": body.description,
        "metadata": body.metadata or {},
        "expires_after": body.expires_after.model_dump() if body.expires_after else None,
        "creating": owner()},  # until complete; removed at start-up if this process dies
        owner={"project_id": who.project, "owner_key_id": who.key_id})
    strategy = vs.chunking_strategy(kbs, rec)
    vs.update_info(kbs, rec.id, lambda info: info.update(last_active_at=rec.created_at,
                                                         chunking_strategy=strategy))
    rec = vs.store(kbs, rec.id)
    if body.file_ids:
        try:
            vs.ingest(kbs, rec, [(f, {}) for f in body.file_ids], who)
        except Exception:
            kbs.delete(rec.id)  # no half-made store when a file id is wrong
            raise
    vs.update_info(kbs, rec.id, lambda info: info.pop("creating", None))
    return vs.store_object(kbs, vs.store(kbs, rec.id), who)


@router.get("/vector_stores")
def list_stores(request: Request, after: str | None = None, before: str | None = None,
                limit: int = 20, order: Literal["asc", "desc"] = "desc",
                who: Caller = Auth) -> dict:
    kbs = kbs_of(request)
    return listing([vs.store_object(kbs, r, who) for r in kbs.list()
                    if who.in_project(r.project_id)], after, before, limit, order)


@router.get("/vector_stores/{vector_store_id}")
def retrieve_store(vector_store_id: str, request: Request, who: Caller = Auth) -> dict:
    kbs = kbs_of(request)
    return vs.store_object(kbs, vs.store(kbs, vector_store_id, who), who)


@router.post("/vector_stores/{vector_store_id}")
def modify_store(vector_store_id: str, body: ModifyStore, request: Request,
                 who: Caller = Auth) -> dict:
    kbs = kbs_of(request)
    rec = vs.store(kbs, vector_store_id, who)
    who.require_owner(rec.owner_key_id, f"modify vector store {rec.id}")
    given = body.model_dump(include=body.model_fields_set)

    def modify(info: dict) -> None:
        for key in ("name", "metadata", "expires_after"):
            if key in given:
                info[key] = given[key] if key != "metadata" else given[key] or {}

    vs.update_info(kbs, rec.id, modify)
    return vs.store_object(kbs, vs.store(kbs, rec.id), who)


@router.delete("/vector_stores/{vector_store_id}")
def delete_store(vector_store_id: str, request: Request, who: Caller = Auth) -> dict:
    kbs = kbs_of(request)
    rec = vs.store(kbs, vector_store_id, who)
    who.require_owner(rec.owner_key_id, f"delete vector store {rec.id}")
    kbs.delete(rec.id)
    return {"id": rec.id, "object": "vector_store.deleted", "deleted": True}


@router.post("/vector_stores/{vector_store_id}/search")
def search_store(vector_store_id: str, body: SearchRequest, request: Request,
                 who: Caller = Auth) -> dict:
    kbs = kbs_of(request)
    queries = [body.query] if isinstance(body.query, str) else list(body.query)
    if not queries or not all(q.strip() for q in queries):
        raise InvalidRequest("query must be a non-empty string or list of strings",
                             param="query")
    vs.store(kbs, vector_store_id, who)
    found = vs.search(kbs, [vector_store_id], queries, groups=who.search_groups,
                      filters=body.filters.model_dump() if body.filters else None,
                      k=body.max_num_results,
                      ranking_options=body.ranking_options.model_dump(exclude_none=True)
                      if body.ranking_options else None,
                      load=lambda m: request.app.state.models.get(
                          m, settings=request.app.state.settings))
    return {"object": "vector_store.search_results.page", "search_query": queries,
            "data": [f.result() for f in found], "has_more": False, "next_page": None}
