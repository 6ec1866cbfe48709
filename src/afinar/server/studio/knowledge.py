"""Knowledge bases: the API's vector stores, with what the API does not show at once: each
document's chunk count and readers, each hit's lexical, dense and fused scores with its heading
path, a search "as group X" for admins, and the check/repair of ``KnowledgeBases.check``.

Creating stores, uploading files and editing attributes go through the API (``/v1``) from the
page's script; the search here calls ``KnowledgeBases.search`` with the caller's
``search_groups``, exactly as the API's search does."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from afinar.errors import AfinarError, InvalidRequest
from afinar.server import routes_vector_store_files, routes_vector_stores
from afinar.server import vector_stores as vs
from afinar.server.common import Caller, error_response
from afinar.server.studio.render import error_page, form_check, page, signed_in

router = APIRouter(include_in_schema=False)


def _kbs(request: Request):
    from afinar.rag.kb import KnowledgeBases

    return KnowledgeBases(request.app.state.settings)


@router.get("/kb", response_class=HTMLResponse)
async def stores(request: Request) -> HTMLResponse:
    s, who = signed_in(request)
    listing = await run_in_threadpool(routes_vector_stores.list_stores, request, None, None,
                                      100, "desc", who)
    return page(request, "kbs.html", who, s, stores=listing["data"])


def store_context(request: Request, who: Caller, store_id: str) -> dict[str, Any]:
    kbs = _kbs(request)
    store = routes_vector_stores.retrieve_store(store_id, request, who)
    files = routes_vector_store_files.list_files(store_id, request, None, None, 100, "desc",
                                                 None, who)["data"]
    docs = vs.documents(kbs, vs.store(kbs, store_id, who), who)
    names = (vs.store(kbs, store_id).info or {}).get("files", {})
    for f in files:
        doc = docs.get(f["id"], (None, 0))[0]
        f["chunks"] = doc.n_chunks if doc else 0
        f["readers"] = list(doc.groups or []) if doc else []
        f["filename"] = names.get(f["id"], {}).get("filename") or (
            doc.source.rsplit("/", 1)[-1] if doc else f["id"])
    groups = sorted({g for k in _keys_groups(request, who) for g in k})
    return {"store": store, "files": files, "groups": groups}


def _keys_groups(request: Request, who: Caller) -> list[list[str]]:
    """The groups of the project's keys (for an admin's "search as group")."""
    if not who.admin:
        return []
    from afinar.store.keys import ApiKeys

    keys = ApiKeys(request.app.state.settings).list(None if who.owner else who.project)
    return [list(k.groups or []) for k in keys]


@router.get("/kb/{store_id}", response_class=HTMLResponse)
async def store_page(store_id: str, request: Request) -> HTMLResponse:
    s, who = signed_in(request)
    try:
        ctx = await run_in_threadpool(store_context, request, who, store_id)
    except AfinarError as e:
        return error_page(request, who, s, "Knowledge base", e)
    return page(request, "kb.html", who, s, **ctx)


def search(request: Request, who: Caller, store_id: str, query: str, as_group: str | None,
           k: int) -> dict[str, Any]:
    kbs = _kbs(request)
    rec = vs.store(kbs, store_id, who)
    groups = who.search_groups
    if as_group:
        who.require_admin("search as another group")
        groups = [as_group]
    named = (rec.info or {}).get("files", {})
    hits = kbs.search(rec.id, query, groups=groups, k=k)
    out = []
    for h in hits:
        fid = vs.file_id_of(h.source, h.doc_id)
        out.append({"file_id": fid, "chunk_id": h.chunk_id,
                    "filename": named.get(fid, {}).get("filename")
                    or h.source.rsplit("/", 1)[-1],
                    "heading_path": list(h.heading_path or []), "text": h.text,
                    "score": h.score, "score_kind": h.score_kind,
                    "lexical_score": h.lexical_score, "lexical_rank": h.lexical_rank,
                    "dense_score": h.dense_score, "dense_rank": h.dense_rank})
    return {"query": query, "as_group": as_group, "data": out}


@router.get("/kb/{store_id}/search")
async def search_route(store_id: str, request: Request, q: str = "", as_group: str = "",
                       k: int = 10) -> JSONResponse:
    _, who = signed_in(request)
    try:
        if not q.strip():
            raise InvalidRequest("type something to search for", param="q")
        return JSONResponse(await run_in_threadpool(search, request, who, store_id, q,
                                                    as_group.strip() or None, k))
    except AfinarError as e:
        return error_response(e.message, e.http_status, e.code, e.param)


def find_chunk(request: Request, who: Caller, store_id: str, chunk_id: int | None = None,
               file_id: str | None = None, quote: str | None = None) -> dict[str, Any]:
    """A chunk by id, or the chunk of ``file_id`` that holds ``quote`` (a citation), if the
    caller may read its document; else the same 404 as an unknown one."""
    from sqlalchemy import select

    from afinar.errors import NotFound
    from afinar.store.tables import KbChunk

    kbs = _kbs(request)
    rec = vs.store(kbs, store_id, who)
    docs = {d.id: (fid, d) for fid, (d, _) in vs.documents(kbs, rec, who).items()}
    with kbs.db.session() as db:
        q = select(KbChunk).where(KbChunk.kb_id == rec.id)
        if chunk_id is not None:
            q = q.where(KbChunk.rowid == chunk_id)
        chunks = [c for c in db.scalars(q.order_by(KbChunk.rowid)) if c.doc_id in docs
                  and (file_id is None or docs[c.doc_id][0] == file_id)]
    if quote:
        chunks = [c for c in chunks if quote.strip() in c.text] or chunks[:0]
    if not chunks:
        raise NotFound(f"no such chunk in vector store {store_id}", param="chunk")
    c = chunks[0]
    fid, doc = docs[c.doc_id]
    name = ((rec.info or {}).get("files", {}).get(fid) or {}).get("filename")
    return {"store": routes_vector_stores.retrieve_store(store_id, request, who), "chunk": c,
            "doc": doc, "file_id": fid, "quote": quote,
            "filename": name or doc.source.rsplit("/", 1)[-1]}


async def _chunk_page(request: Request, **where: Any) -> HTMLResponse:
    s, who = signed_in(request)
    try:
        ctx = await run_in_threadpool(find_chunk, request, who, **where)
    except AfinarError as e:
        return error_page(request, who, s, "Chunk", e)
    return page(request, "chunk.html", who, s, **ctx)


@router.get("/kb/{store_id}/chunks/{chunk_id}", response_class=HTMLResponse)
async def chunk_page(store_id: str, chunk_id: int, request: Request) -> HTMLResponse:
    return await _chunk_page(request, store_id=store_id, chunk_id=chunk_id)


def cited_chunk(request: Request, who: Caller, store_id: str, file_id: str | None = None,
                quote: str | None = None, query: str | None = None,
                sentence: str | None = None) -> dict[str, Any]:
    """The chunk a citation points at, and why it was retrieved: ``query`` (the question the
    answer was grounded on) searched again as the caller, as the ``file_search`` tool searches
    by default (10 results); among the cited file's hits, the one that best supports the cited
    ``sentence`` (``rag.answer.support``, the grounding's own check), else the best ranked.
    Without ``query``: the file's chunk that holds ``quote`` (``find_chunk``)."""
    if not query:
        return find_chunk(request, who, store_id, file_id=file_id, quote=quote)
    from afinar.rag.answer import SUPPORT, support

    found = search(request, who, store_id, query, None, 10)["data"]
    ranked = [(rank, h) for rank, h in enumerate(found, 1) if h["file_id"] == file_id]
    why: dict[str, Any] = {"query": query, "sentence": sentence, "of": len(found),
                           "rank": None, "threshold": SUPPORT}
    if not ranked:  # not retrieved for it now (documents or groups changed): the file's chunk
        return {**find_chunk(request, who, store_id, file_id=file_id, quote=quote), "why": why}

    def backing(h: dict[str, Any]) -> float:
        return support(sentence, h["text"], h["heading_path"]) if sentence else 0.0

    rank, hit = max(ranked, key=lambda rh: (backing(rh[1]), -rh[0]))
    why.update(rank=rank, support=backing(hit) if sentence else None,
               **{k: hit[k] for k in ("score", "score_kind", "lexical_score", "lexical_rank",
                                      "dense_score", "dense_rank")})
    return {**find_chunk(request, who, store_id, chunk_id=hit["chunk_id"]), "why": why}


@router.get("/kb/{store_id}/cite", response_class=HTMLResponse)
async def cite_page(store_id: str, request: Request, file_id: str = "", quote: str = "",
                    q: str = "", sentence: str = "") -> HTMLResponse:
    """The chunk a ``file_citation`` points at (its file, quote, the question and the cited
    sentence of the answer), with why it was retrieved."""
    s, who = signed_in(request)
    try:
        ctx = await run_in_threadpool(cited_chunk, request, who, store_id, file_id or None,
                                      quote or None, q.strip()[:4096] or None,
                                      sentence.strip()[:4096] or None)
    except AfinarError as e:
        return error_page(request, who, s, "Chunk", e)
    return page(request, "chunk.html", who, s, **ctx)


@router.post("/kb/{store_id}/check", response_class=HTMLResponse)
async def check(store_id: str, request: Request) -> HTMLResponse:
    form = await request.form()
    s, who = form_check(request, form)
    repair = form.get("repair") == "1"

    def run() -> dict[str, Any]:
        kbs = _kbs(request)
        rec = vs.store(kbs, store_id, who)
        if repair:
            who.require_owner(rec.owner_key_id, f"repair vector store {rec.id}")
        return kbs.check(rec.id, repair=repair)

    try:
        result = await run_in_threadpool(run)
        ctx = await run_in_threadpool(store_context, request, who, store_id)
    except AfinarError as e:
        return error_page(request, who, s, "Knowledge base", e)
    return page(request, "kb.html", who, s, check=result, **ctx)
