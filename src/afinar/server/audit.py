"""The audit middleware: after each request, one line in the audit log
(``afinar.store.audit``) for every write (POST, PUT, PATCH, DELETE: refused ones too) by a
key, and for every read by an admin or owner key. The action is the method and the route
(``DELETE /v1/files/{file_id}``). The object is the id the route names
(``request.state.audit_object``), else the last id in the path, else the ``id`` of the JSON
response (a new file, store, job...)."""

from __future__ import annotations

import json
import logging

from starlette.concurrency import run_in_threadpool

from afinar.store.audit import AuditLog

log = logging.getLogger(__name__)
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
MAX_BODY = 1 << 20  # a JSON response read for its id only up to this size


class AuditMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        seen = {"status": 500, "json": False, "body": bytearray()}

        async def watch(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                kind = dict(message.get("headers") or []).get(b"content-type", b"")
                seen["json"] = kind.startswith(b"application/json")
            elif message["type"] == "http.response.body" and seen["json"]:
                if len(seen["body"]) + len(message.get("body", b"")) <= MAX_BODY:
                    seen["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            await self._record(scope, seen)

    async def _record(self, scope, seen) -> None:
        state = scope.get("state") or {}
        caller = state.get("caller")
        method = scope["method"]
        if caller is None or not (method in WRITES or (caller.admin and caller.key_id)):
            return  # no key got through, or a non-admin's (or local mode's) read
        obj = state.get("audit_object") or _path_id(scope.get("path_params") or {})
        if obj is None and seen["body"] and method in WRITES:
            try:
                value = json.loads(bytes(seen["body"])).get("id")
                obj = value if isinstance(value, str) else None
            except (ValueError, AttributeError):
                obj = None
        try:
            await run_in_threadpool(
                AuditLog(scope["app"].state.settings).record, key_id=caller.key_id,
                key_name=caller.name, project_id=caller.project,
                action=f"{method} {_route(scope)}", object_id=obj, status=seen["status"])
        except Exception:  # the audit log must never fail a request that was served
            log.exception("could not write the audit log")


def _route(scope) -> str:
    """The path with its parameters named (``/v1/files/{file_id}``: the object is a column of
    its own)."""
    path = scope["path"]
    for name, value in (scope.get("path_params") or {}).items():
        value = str(value)
        if value and path.endswith("/" + value):
            path = path[:-len(value)] + "{" + name + "}"
        elif value:
            path = path.replace("/" + value + "/", "/{" + name + "}/", 1)
    return path


def _path_id(params: dict) -> str | None:
    for name in ("batch_id", "file_id", "fine_tuning_job_id", "vector_store_id", "key_id",
                 "model_id"):
        if params.get(name):
            return str(params[name])
    return None
