"""The studio's writes in the audit log (``afinar.store.audit``), as the API's are
(``afinar.server.audit`` covers ``/v1``): every POST of a signed-in caller to a studio page
(sign-in, keys, dataset actions, evaluations, checks), with its route, object and status."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool

from afinar.server.audit import _path_id, _route
from afinar.store.audit import AuditLog

log = logging.getLogger(__name__)
_IDS = ("key_id", "file_id", "store_id", "run_id", "job_id")


class StudioAudit:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"].startswith(("/v1/", "/studio/static/"))):
            return await self.app(scope, receive, send)
        seen = {"status": 500, "location": None}

        async def watch(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                seen["location"] = dict(message.get("headers") or []).get(b"location")
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            await self._record(scope, seen)

    async def _record(self, scope, seen) -> None:
        state = scope.get("state") or {}
        caller = state.get("caller")
        if caller is None:
            return
        params = scope.get("path_params") or {}
        obj = state.get("audit_object") or next((str(params[k]) for k in _IDS if params.get(k)), None) or _path_id(params)
        if obj is None and seen["location"]:
            tail = seen["location"].decode(errors="replace").rstrip("/").rsplit("/", 1)[-1]
            obj = tail.split("=", 1)[-1] if "-" in tail or "_" in tail else None
        try:
            await run_in_threadpool(
                AuditLog(scope["app"].state.settings).record, key_id=caller.key_id,
                key_name=caller.name, project_id=caller.project,
                action=f"POST {_route(scope)} (studio)", object_id=obj, status=seen["status"])
        except Exception:  # the audit log must never fail a request that was served
            log.exception("could not write the audit log")
