"""``/v1/models``: the catalog (built-ins, registered, fine-tuned ``ft:`` models and their
checkpoints) as OpenAI ``model`` objects; only fine-tuned models can be deleted, by admin keys.

A fine-tuned model belongs to its job's project: to keys of other projects it does not exist
(404); built-in and registered (CLI) models are every project's. An alias (``afinar models
alias``) is listed as a model of its own id with the target's facts and afinar's extension field
``afinar: {"alias_of": TARGET, "updated_at": ...}``; it is as visible as its target."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from afinar.errors import AfinarError, NotFound
from afinar.models.aliases import Alias, Aliases
from afinar.models.catalog import Catalog, ModelInfo
from afinar.server.common import Auth, Caller, model_visible, require_model

router = APIRouter(dependencies=[Auth])


class NotDeletable(AfinarError):
    code = "model_not_deletable"
    http_status = 403


def model_object(m: ModelInfo) -> dict[str, Any]:
    """OpenAI's ``model`` object plus afinar's facts (kind, format, sizes, base model)."""
    return {"id": m.id, "object": "model", "created": m.created_at,
            "owned_by": "afinar" if m.source == "builtin" else (m.owned_by or "user"),
            "kind": m.kind, "format": m.format, "source": m.source,
            "base_model": m.base_model, "parameters": m.parameters,
            "context_length": m.context_length, "size_bytes": m.size_bytes,
            "available": m.available}


def alias_object(a: Alias, target: ModelInfo) -> dict[str, Any]:
    """An alias as a ``model`` object: its own id and creation time, the target's facts, and
    ``afinar.alias_of`` naming the target."""
    return {**model_object(target), "id": a.name, "created": int(a.created_at),
            "source": "alias", "afinar": {"alias_of": a.model, "updated_at": int(a.updated_at)}}


def _aliases(request: Request, who: Caller) -> list[dict[str, Any]]:
    out = []
    catalog = _catalog(request)
    for a in Aliases(request.app.state.settings).list():
        try:
            target = catalog.get(a.model)
        except NotFound:  # its model is gone from the catalog: nothing to serve, not listed
            continue
        if model_visible(request, who, a.model):
            out.append(alias_object(a, target))
    return out


def _catalog(request: Request) -> Catalog:
    return Catalog(request.app.state.settings)


@router.get("/models")
async def list_models(request: Request, who: Caller = Auth) -> dict[str, Any]:
    models = await run_in_threadpool(_catalog(request).list)
    aliases = await run_in_threadpool(_aliases, request, who)
    return {"object": "list", "data": [model_object(m) for m in models
                                       if model_visible(request, who, m.id)] + aliases}


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request, who: Caller = Auth) -> dict[str, Any]:
    m = await run_in_threadpool(_catalog(request).get, model_id)
    require_model(request, model_id)
    alias = await run_in_threadpool(Aliases(request.app.state.settings).find, model_id)
    return alias_object(alias, m) if alias is not None else model_object(m)


@router.delete("/models/{model_id:path}")
async def delete_model(model_id: str, request: Request,
                       who: Caller = Auth) -> dict[str, Any]:
    who.require_admin("delete models")
    catalog = _catalog(request)
    await run_in_threadpool(catalog.get, model_id)  # unknown -> 404
    require_model(request, model_id)  # another project's -> 404
    if not model_id.startswith("ft:"):
        raise NotDeletable(f"{model_id!r} is not a fine-tuned model: only fine-tuned models "
                           "(ids starting with 'ft:') can be deleted through the API; remove "
                           "registered models with `afinar models remove`", param="model")
    await run_in_threadpool(catalog.remove, model_id)
    return {"id": model_id, "object": "model", "deleted": True}
