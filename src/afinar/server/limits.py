"""Limits on request bodies, checked before any route runs, and validation errors in OpenAI's
shape.

``BodyLimits`` (an ASGI middleware) counts a body's bytes as they arrive:

- JSON bodies (``application/json``, ``+json``, or no content type: what FastAPI parses as JSON)
  are capped at ``AFINAR_MAX_JSON_BODY`` bytes (default 4 MiB; ``k``/``M``/``G`` suffixes
  allowed): past it the answer is 413 without reading further. The body is then checked as
  strict JSON: ``NaN``/``Infinity`` (which Python's parser accepts), numbers that overflow to
  infinity, lone UTF-16 surrogates (``"\\ud800"``, which no UTF-8 text can hold) and nesting
  deeper than ``MAX_DEPTH`` are 400, as invalid JSON is.
- Other bodies (multipart file uploads) are refused with 413 as soon as the stream passes the
  upload cap (``app.state.max_upload_bytes``, from ``AFINAR_MAX_UPLOAD_BYTES``, default 512 MiB)
  plus ``MULTIPART_SLACK`` for the form's own bytes; the file store still checks the file's
  exact size. A ``Content-Length`` over a cap is refused before anything is read.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from afinar.errors import InvalidRequest
from afinar.server.common import error_body, error_response
from afinar.server.schema_errors import error_message

DEFAULT_MAX_JSON = 4 * 1024 * 1024
MULTIPART_SLACK = 64 * 1024
MAX_DEPTH = 64
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(value: str | int | None, default: int, name: str) -> int:
    """``"4MiB"``, ``"512M"``, ``"1048576"`` -> bytes."""
    if value is None or value == "":
        return default
    m = _SIZE.match(str(value))
    if not m or int(m.group(1)) <= 0:
        raise InvalidRequest(f"{name} must be a size in bytes such as 4194304 or 4MiB, not "
                             f"{value!r}", param=name)
    unit = (m.group(2) or "b")[0].lower()
    return int(m.group(1)) * {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def max_json_body() -> int:
    return parse_size(os.environ.get("AFINAR_MAX_JSON_BODY"), DEFAULT_MAX_JSON,
                      "AFINAR_MAX_JSON_BODY")


def max_upload_bytes(default: int) -> int:
    return parse_size(os.environ.get("AFINAR_MAX_UPLOAD_BYTES"), default,
                      "AFINAR_MAX_UPLOAD_BYTES")


class TooLarge(HTTPException):
    """Raised while a body streams in (FastAPI lets only HTTP errors out of form parsing)."""

    def __init__(self, cap: int, is_json: bool):
        super().__init__(413, _too_large_text(cap, is_json))
        self.code = "request_too_large" if is_json else "file_too_large"


async def too_large_handler(_request, exc: TooLarge) -> JSONResponse:
    return JSONResponse(error_body(exc.detail, 413, exc.code), status_code=413,
                        headers={"Connection": "close"})


class _BadJson(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _BadJson(f"{name} is not valid JSON (numbers must be finite)")


def _finite(text: str) -> float:
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise _BadJson(f"the number {text[:40]} is too large")
    return v


def check_json(body: bytes) -> str | None:
    """Why ``body`` is not strict JSON, or ``None`` (afinar's strictness over Python's)."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant,
                           parse_float=_finite)
    except _BadJson as e:
        return str(e)
    except RecursionError:
        return f"the JSON is nested deeper than {MAX_DEPTH} levels"
    except (UnicodeDecodeError, ValueError):
        return None  # FastAPI answers these itself (400: invalid JSON)
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"the JSON is nested deeper than {MAX_DEPTH} levels"
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return "a string holds a lone UTF-16 surrogate (not valid Unicode text)"
        elif isinstance(v, dict):
            stack.extend((x, depth + 1) for kv in v.items() for x in kv)
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
    return None


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return not kind or kind == "application/json" or kind.endswith("+json")


class BodyLimits:
    def __init__(self, app, max_json: int | None = None):
        self.app = app
        self.max_json = max_json or max_json_body()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        is_json = _is_json(content_type)
        state = getattr(scope.get("app"), "state", None)
        upload = int(getattr(state, "max_upload_bytes", 0) or 0) or max_upload_bytes(
            512 * 1024 * 1024)
        cap = self.max_json if is_json else upload + MULTIPART_SLACK
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > cap:
            await self._too_large(scope, receive, send, cap, is_json)
            return
        if is_json:
            await self._json(scope, receive, send, cap)
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise TooLarge(cap, False)
            return message

        await self.app(scope, counted, send)

    async def _json(self, scope, receive, send, cap: int) -> None:
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                await self._too_large(scope, receive, send, cap, True)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        why = check_json(body) if body else None
        if why is not None:
            response = error_response(f"We could not parse the JSON body of your request: "
                                      f"{why}.", 400, "invalid_json")
            await response(scope, receive, send)
            return
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _too_large(scope, receive, send, cap: int, is_json: bool) -> None:
        response = JSONResponse(error_body(_too_large_text(cap, is_json), 413,
                                           "request_too_large" if is_json else
                                           "file_too_large"), status_code=413,
                                headers={"Connection": "close"})
        await response(scope, receive, send)


def _too_large_text(cap: int, is_json: bool) -> str:
    if is_json:
        return (f"The request body is larger than {cap:,} bytes (AFINAR_MAX_JSON_BODY); send "
                "less per request")
    return (f"The upload is larger than the server's limit of {cap - MULTIPART_SLACK:,} bytes "
            "(AFINAR_MAX_UPLOAD_BYTES)")


async def validation_error_handler(_request, exc) -> JSONResponse:
    """A request that does not match its schema: 400 with OpenAI's message, param and code."""
    message, param, code = error_message(list(exc.errors()))
    return error_response(message, 400, code, param)
