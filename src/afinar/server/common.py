"""What every route shares: OpenAI's error object, authentication, pagination, the model cache."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from afinar.errors import AfinarError

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


async def http_error_handler(_request: Request, exc: HTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(detail, exc.status_code, None, None)


async def validation_error_handler(_request: Request, exc) -> JSONResponse:
    err = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in err.get("loc", []) if p not in ("body", "query", "path")]
    param = ".".join(loc) or None
    return error_response(f"Invalid value for {param or 'request'}: {err.get('msg', 'invalid')}",
                          400, "invalid_value", param)


def require_key(request: Request) -> None:
    """Bearer authentication against hashed keys (when the app was started with auth on)."""
    if not request.app.state.auth:
        return
    header = request.headers.get("authorization", "")
    secret = header[7:].strip() if header.lower().startswith("bearer ") else ""
    from afinar.store.keys import ApiKeys

    if not secret or ApiKeys(request.app.state.settings).verify(secret) is None:
        raise HTTPException(401, "Incorrect API key provided. Create one with "
                                 "`afinar keys create NAME`.")


Auth = Depends(require_key)


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
