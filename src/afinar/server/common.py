"""What every route shares: OpenAI's error object, authentication (the ``Caller``; its access
rules are ``afinar.store.access``'s), pagination."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from afinar.errors import AfinarError, NotFound
from afinar.store.access import Caller, Forbidden  # noqa: F401 (the routes import them here)
from afinar.store.files import Files
from afinar.store.tables import FileRecord

# HTTP status -> OpenAI error type
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error"}


def error_body(message: str, status: int, code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"),
                      "param": param, "code": code}}


def error_response(message: str, status: int, code: str | None = None,
                   param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status, code, param), status_code=status)


async def afinar_error_handler(_request: Request, exc: AfinarError) -> JSONResponse:
    return error_response(exc.message, exc.http_status, exc.code, exc.param)


async def http_error_handler(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own errors (an unknown URL, a wrong method, a body that is not
    JSON) in OpenAI's shape."""
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code in (404, 405) and detail in ("Not Found", "Method Not Allowed"):
        detail = f"Invalid URL ({request.method} {request.url.path})"
    response = error_response(detail, exc.status_code, None, None)
    response.headers.update(exc.headers or {})
    return response


async def unexpected_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """A bug (any other exception): OpenAI's 500 shape instead of a plain-text page; the
    traceback still goes to the server's log."""
    return error_response(f"The server had an error while processing your request "
                          f"({type(exc).__name__}); the server log has the details.", 500,
                          "server_error")


LOCAL = Caller(None, "local development mode", admin=True, owner=True)
_BEARER = Depends(HTTPBearer(auto_error=False,
                             description="an afinar API key (`afinar keys create`)"))


def require_key(request: Request,
                credentials: HTTPAuthorizationCredentials | None = _BEARER) -> Caller:
    """Bearer authentication against hashed keys; the caller is kept on ``request.state``.

    Without keys (``app.state.auth`` false: local development mode) every request is the
    ``LOCAL`` admin, until a key is created: from then on keys are required."""
    from afinar.store.keys import ApiKeys

    keys = ApiKeys(request.app.state.settings)
    if not request.app.state.auth:
        if not keys.any():
            request.state.caller = LOCAL
            return LOCAL
        request.app.state.auth = True  # a key exists now: the development mode is over
    if credentials is None:
        raise AuthError("You didn't provide an API key: send it as `Authorization: Bearer "
                        "KEY` (create one with `afinar keys create --name NAME`).")
    rec = keys.verify(credentials.credentials.strip())
    if rec is None:
        raise AuthError("Incorrect API key provided. Create one with "
                        "`afinar keys create --name NAME`.", code="invalid_api_key")
    caller = Caller(rec.id, rec.name, frozenset(rec.groups or []),
                    bool(rec.admin or rec.owner), rec.project_id or "default", bool(rec.owner))
    request.state.caller = caller
    return caller


class AuthError(AfinarError):
    code = "missing_api_key"
    http_status = 401


Auth = Depends(require_key)  # a router's dependency, or a route's ``who: Caller = Auth``


def readable_file(caller: Caller, files: Files, file_id: str, param: str = "file_id"
                  ) -> FileRecord:
    """The file record if the caller may see it; otherwise the same 404 as an unknown id (so
    existence does not leak)."""
    try:
        rec = files.get(file_id)
    except NotFound:
        rec = None
    if rec is None or not caller.may_read_file(rec):
        raise NotFound(f"no file {file_id!r}", param=param)
    return rec


def model_visible(request: Request, caller: Caller, model_id: str) -> bool:
    """Whether the caller's project has this model: a fine-tuned one (or checkpoint) is its
    job's project's; built-in and registered ones are every project's."""
    from afinar.store.access import model_project
    from afinar.store.db import get_database

    return caller.owner or model_project(get_database(request.app.state.settings.db_url),
                                         model_id) in (None, caller.project)


def require_model(request: Request, model_id: str) -> None:
    """404 for another project's fine-tuned model, as for an unknown one."""
    if not model_visible(request, request.state.caller, model_id):
        raise NotFound(f"The model {model_id!r} does not exist", code="model_not_found",
                       param="model")


def page(items: list[dict[str, Any]], after: str | None, limit: int,
         max_limit: int = 100) -> dict[str, Any]:
    """OpenAI's cursor page over items already in the listing order (each with an ``id``);
    most lists allow pages of up to 100, the files list up to 10,000."""
    limit = max(1, min(limit, max_limit))
    if after:
        ids = [x["id"] for x in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    chunk = items[:limit]
    return {"object": "list", "data": chunk, "has_more": len(items) > limit,
            "first_id": chunk[0]["id"] if chunk else None,
            "last_id": chunk[-1]["id"] if chunk else None}
