"""The FastAPI application. Each endpoint group is a router in its own module; all of them call
services (``afinar.models``, ``afinar.tuning``, ``afinar.rag``, ``afinar.store``) and translate
objects to OpenAI's shapes, nothing more."""

from __future__ import annotations

import importlib

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from afinar import __version__
from afinar.errors import AfinarError
from afinar.models import ModelCache
from afinar.server.audit import AuditMiddleware
from afinar.server.common import afinar_error_handler, http_error_handler, \
    unexpected_error_handler
from afinar.server.limits import BodyLimits, TooLarge, max_upload_bytes, too_large_handler, \
    validation_error_handler
from afinar.settings import Settings, get_settings
from afinar.store.files import MAX_BYTES

ROUTERS = ("routes_models", "routes_chat", "routes_files", "routes_embeddings",
           "routes_fine_tuning", "routes_vector_stores", "routes_responses", "routes_keys",
           "routes_feedback", "routes_graders")


def create_app(settings: Settings | None = None, auth: bool | None = None,
               max_models: int = 2) -> FastAPI:
    """Request bodies are capped and checked before any route runs (``afinar.server.limits``)
    and validated against OpenAI's schemas (``afinar.server.schemas``).

    ``auth``: require keys (default: when any exists). Without keys the app runs in local
    development mode (every request acts as an admin) until a key is created; ``afinar serve``
    allows that only on a loopback address."""
    settings = settings or get_settings()
    app = FastAPI(title="afinar", version=__version__,
                  description="OpenAI-compatible fine-tuning, files, models, chat, embeddings "
                              "and vector stores, self-hosted.")
    from afinar.store.keys import ApiKeys

    app.state.settings = settings
    app.state.auth = ApiKeys(settings).any() if auth is None else auth
    app.state.models = ModelCache(max_models=max_models)
    app.state.max_upload_bytes = max_upload_bytes(MAX_BYTES)
    _recover(settings)
    app.add_middleware(BodyLimits)  # before parsing: size caps, strict JSON
    app.add_middleware(AuditMiddleware)  # who did what: afinar.store.audit
    app.add_exception_handler(TooLarge, too_large_handler)
    app.add_exception_handler(AfinarError, afinar_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)  # routing's too
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    for name in ROUTERS:
        app.include_router(importlib.import_module(f"afinar.server.{name}").router, prefix="/v1")
    from afinar.server.studio import mount as mount_studio

    mount_studio(app)  # the studio at /, same port and keys (afinar.server.studio)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "version": __version__}

    return app


def _recover(settings: Settings) -> None:
    """What a killed server left half done: vector stores, file entries, staging folders
    (``afinar.server.vector_store_recovery``)."""
    from afinar.rag.kb import KnowledgeBases
    from afinar.server.vector_store_recovery import recover

    recover(KnowledgeBases(settings))
