"""afinar studio: the web dashboard served by ``afinar serve`` at ``/``, on the same port and
with the same keys as the API.

Pages are Jinja2 templates rendered here; each page is a thin adapter over the services and
route functions the API uses (so a key sees exactly what the API shows it). The small scripts in
``static/`` call the API itself (``/v1``) with the session cookie and a CSRF header
(``afinar.server.studio.session``). Charts are inline SVG drawn by those scripts: no library,
no build step, nothing from a CDN.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from afinar.server.common import require_key
from afinar.server.studio.audit import StudioAudit
from afinar.server.studio.render import NotSignedIn, not_signed_in
from afinar.server.studio.session import Sessions, studio_or_key

STATIC = Path(__file__).parent / "static"
PAGES = ("pages", "datasets", "tuning", "knowledge", "playground", "evaluations")


def mount(app: FastAPI) -> None:
    """The studio's pages at ``/``, its static files at ``/studio/static``, session
    authentication for ``/v1`` (an ``Authorization`` header still comes first) and the audit
    of the studio's own writes."""
    app.state.studio_sessions = Sessions()
    app.dependency_overrides[require_key] = studio_or_key
    app.add_middleware(StudioAudit)  # the studio's writes in the audit log, as /v1's
    app.add_exception_handler(NotSignedIn, not_signed_in)
    app.mount("/studio/static", StaticFiles(directory=STATIC), name="studio-static")
    for name in PAGES:
        app.include_router(importlib.import_module(f"afinar.server.studio.{name}").router)
