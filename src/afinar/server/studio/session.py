"""Studio sign-in: an API key is exchanged for a server-side session.

The browser holds only a random session token, in an ``HttpOnly``, ``SameSite=Strict`` cookie;
the server keeps the token's SHA-256 (never the token, never the key) with the key's id and a
CSRF token. Each request re-reads the key (``afinar.store.keys.ApiKeys``), so a revoked key
ends its sessions at once, and builds the same ``Caller`` as ``require_key`` does, so the studio
sees exactly what the key sees through the API.

In local development mode (no keys exist; ``afinar serve`` allows it on loopback only) signing
in with an empty key opens a session of the ``LOCAL`` caller, as the API treats a request
without a key.

CSRF: every form carries the session's CSRF token (``csrf`` field) and every ``fetch`` from the
studio the ``X-CSRF-Token`` header; a write without the right token is refused (403). Requests
with the session cookie may also reach ``/v1`` (the studio's scripts use the API itself): the
``require_key`` dependency is overridden by ``studio_or_key``, which takes an ``Authorization``
header first, exactly as before, and a session only when there is none.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from afinar.errors import NotFound
from afinar.server.common import LOCAL, AuthError, Caller, Forbidden, require_key

COOKIE = "afinar_studio"
CSRF_HEADER = "x-csrf-token"
TTL_S = 12 * 3600
SAFE = {"GET", "HEAD", "OPTIONS"}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    key_id: str | None  # None: local development mode
    csrf: str
    expires: float
    created: float = field(default_factory=time.time)


class Sessions:
    """Sessions by token hash, in the server's memory (a restart signs everyone out)."""

    def __init__(self) -> None:
        self._by_hash: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, key_id: str | None) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        s = Session(key_id, secrets.token_urlsafe(24), time.time() + TTL_S)
        with self._lock:
            now = time.time()
            self._by_hash = {h: v for h, v in self._by_hash.items() if v.expires > now}
            self._by_hash[_digest(token)] = s
        return token, s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            s = self._by_hash.get(_digest(token))
        if s is None or s.expires < time.time():
            return None
        return s

    def close(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._by_hash.pop(_digest(token), None)

    def stored_hashes(self) -> list[str]:
        with self._lock:
            return list(self._by_hash)


def sessions(request: Request) -> Sessions:
    return request.app.state.studio_sessions


def caller_of(request: Request, s: Session) -> Caller | None:
    """The session's caller, built as ``require_key`` builds it; ``None`` when its key is gone
    (revoked) or when keys now exist and the session was local mode's."""
    from afinar.store.keys import ApiKeys

    keys = ApiKeys(request.app.state.settings)
    if s.key_id is None:
        if request.app.state.auth or keys.any():
            return None
        return LOCAL
    try:
        rec = keys.get(s.key_id)
    except NotFound:
        return None
    return Caller(rec.id, rec.name, frozenset(rec.groups or []), bool(rec.admin or rec.owner),
                  rec.project_id or "default", bool(rec.owner))


def current(request: Request) -> tuple[Session, Caller] | None:
    """The request's session and caller, or ``None`` (not signed in)."""
    s = sessions(request).get(request.cookies.get(COOKIE))
    if s is None:
        return None
    who = caller_of(request, s)
    if who is None:
        sessions(request).close(request.cookies.get(COOKIE))
        return None
    request.state.caller = who
    return s, who


def check_csrf(s: Session, sent: str | None) -> None:
    if not sent or not hmac.compare_digest(sent, s.csrf):
        raise Forbidden("the form's CSRF token is missing or wrong: reload the page and try "
                        "again", code="csrf_failed")


def sign_in(request: Request, key: str) -> tuple[str, Session]:
    """Exchange ``key`` (empty: local development mode, when no keys exist) for a session."""
    from afinar.store.keys import ApiKeys

    keys = ApiKeys(request.app.state.settings)
    key = (key or "").strip()
    if not key:
        if not request.app.state.auth and not keys.any():
            return sessions(request).open(None)
        raise AuthError("Paste an API key to sign in (create one with `afinar keys create "
                        "--name NAME`).")
    rec = keys.verify(key)
    if rec is None:
        raise AuthError("Incorrect API key: check it, or create one with `afinar keys create "
                        "--name NAME`.", code="invalid_api_key")
    request.app.state.auth = True
    return sessions(request).open(rec.id)


_BEARER = Depends(HTTPBearer(auto_error=False,
                             description="an afinar API key (`afinar keys create`)"))


def studio_or_key(request: Request,
                  credentials: HTTPAuthorizationCredentials | None = _BEARER) -> Caller:
    """``require_key``, or the studio session when no ``Authorization`` header came (writes
    then need the ``X-CSRF-Token`` header)."""
    if credentials is None and request.headers.get("authorization") is None:
        got = current(request)
        if got is not None:
            s, who = got
            if request.method not in SAFE:
                check_csrf(s, request.headers.get(CSRF_HEADER))
            return who
    return require_key(request, credentials)
