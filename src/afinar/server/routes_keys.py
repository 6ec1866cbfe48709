"""``/v1/keys``: API keys managed over HTTP by admin keys (afinar's own endpoints; the CLI's
``afinar keys create|list|revoke`` does the same locally).

``POST /v1/keys`` returns the new secret once, in ``key``; listings show its ``prefix`` only.
``POST /v1/keys/{id}`` changes a key's ``groups`` or ``admin`` flag (owner keys only by owners).
``GET /v1/keys/me`` tells any key its own name, project, groups and admin and owner flags. An
admin manages the keys of its own project; only an owner key names another ``project`` or makes
owner keys (another project's key: 404).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from afinar.errors import NotFound
from afinar.server.common import Auth, Caller, Forbidden
from afinar.store.keys import ApiKeys
from afinar.store.tables import ApiKey

router = APIRouter(dependencies=[Auth])


class CreateKey(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    groups: list[str] | str = Field(default_factory=list,
                                    description="group names, as a list or comma-separated")
    admin: bool = False
    project: str | None = None
    owner: bool = False


class UpdateKey(BaseModel):
    model_config = {"extra": "forbid"}

    groups: list[str] | str | None = Field(None, description="the key's new groups (all of them)")
    admin: bool | None = None


def key_object(rec: ApiKey) -> dict[str, Any]:
    return {"id": rec.id, "object": "api_key", "name": rec.name, "groups": rec.groups or [],
            "admin": bool(rec.admin), "owner": bool(rec.owner),
            "project": rec.project_id or "default", "prefix": rec.prefix, "created_at": rec.created_at,
            "last_used_at": rec.last_used_at}


def _keys(request: Request) -> ApiKeys:
    return ApiKeys(request.app.state.settings)


@router.get("/keys")
def list_keys(request: Request, who: Caller = Auth) -> dict[str, Any]:
    who.require_admin("list API keys")
    keys = _keys(request).list(None if who.owner else who.project)
    return {"object": "list", "data": [key_object(k) for k in keys]}


@router.post("/keys")
def create_key(body: CreateKey, request: Request, who: Caller = Auth) -> dict[str, Any]:
    who.require_admin("create API keys")
    project = body.project or who.project
    if (project != who.project or body.owner) and not who.owner:
        raise Forbidden("only an owner key may create keys in another project or owner keys "
                        f"(this key, {who.name}, is an admin of project {who.project})")
    rec, secret = _keys(request).create(body.name, body.groups, body.admin, project,
                                        body.owner)
    request.state.audit_object = rec.id
    return {**key_object(rec), "key": secret}


@router.get("/keys/me")
def whoami(who: Caller = Auth) -> dict[str, Any]:
    return {"id": who.key_id, "object": "api_key", "name": who.name,
            "groups": sorted(who.groups), "admin": who.admin, "owner": who.owner,
            "project": who.project}


@router.post("/keys/{key_id}")
def update_key(key_id: str, body: UpdateKey, request: Request,
               who: Caller = Auth) -> dict[str, Any]:
    who.require_admin("change API keys")
    keys = _keys(request)
    rec = keys.get(key_id)
    if not who.in_project(rec.project_id):
        raise NotFound(f"no API key {key_id!r}", param="key_id")
    if rec.owner and not who.owner:
        raise Forbidden(f"only an owner key may change an owner key ({rec.name})")
    request.state.audit_object = key_id
    return key_object(keys.update(key_id, body.groups, body.admin))


@router.delete("/keys/{key_id}")
def revoke_key(key_id: str, request: Request, who: Caller = Auth) -> dict[str, Any]:
    who.require_admin("revoke API keys")
    keys = _keys(request)
    if not who.in_project(keys.get(key_id).project_id):
        raise NotFound(f"no API key {key_id!r}", param="key_id")
    keys.revoke(key_id)
    return {"id": key_id, "object": "api_key.deleted", "deleted": True}
