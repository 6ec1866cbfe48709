"""What every studio page shares: the signed-in caller, template rendering, form checks and
number formats."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from afinar import __version__
from afinar.errors import AfinarError
from afinar.server.common import Caller
from afinar.server.studio.session import Session, check_csrf, current

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


class NotSignedIn(Exception):
    """A page asked for without a session: the sign-in page, then back."""

    def __init__(self, path: str):
        self.path = path


async def not_signed_in(_request: Request, exc: NotSignedIn) -> RedirectResponse:
    return RedirectResponse(f"/signin?next={exc.path}", status_code=303)


def signed_in(request: Request) -> tuple[Session, Caller]:
    got = current(request)
    if got is None:
        raise NotSignedIn(request.url.path)
    return got


def form_check(request: Request, form: Any) -> tuple[Session, Caller]:
    """A form post: signed in and carrying the session's CSRF token."""
    s, who = signed_in(request)
    check_csrf(s, form.get("csrf"))
    return s, who


def pydantic_message(e: Any) -> str:
    """A form's first invalid field, as one line: ``name: String should have at most 128
    characters``."""
    err = e.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ()))
    return f"{where}: {err.get('msg', 'invalid value')}" if where else err.get("msg", "invalid")


def page(request: Request, template: str, who: Caller | None, s: Session | None,
         status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {
        "who": who, "csrf": s.csrf if s else "", "version": __version__,
        "path": request.url.path, **context}, status_code=status_code)


def error_page(request: Request, who: Caller | None, s: Session | None, title: str,
               e: AfinarError, status_code: int | None = None) -> HTMLResponse:
    """A service's error as its own page: the clear message, the error's HTTP status."""
    return page(request, "error.html", who, s, status_code=status_code or e.http_status,
                title=title, error=e.message)


def size(n: int | float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def when(ts: int | float | None) -> str:
    if not ts:
        return "–"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def num(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, (int, float)):
        return f"{v:,.{digits}f}"
    return str(v)


templates.env.filters.update(size=size, when=when, num=num)
