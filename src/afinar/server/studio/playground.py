"""Playground: 2-4 models side by side on the same prompt and seed, each with or without a
knowledge base. The page's script calls ``POST /v1/chat/completions`` for each column
(streamed; with a knowledge base, the ``file_search`` tool, whose answer carries the
citations); this module only lists what the caller may pick."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from afinar.server import routes_vector_stores
from afinar.server.studio.datasets import chat_models
from afinar.server.studio.render import page, signed_in

router = APIRouter(include_in_schema=False)


@router.get("/playground", response_class=HTMLResponse)
async def playground(request: Request, model: list[str] = Query(default=[])  # noqa: B008
                     ) -> HTMLResponse:
    s, who = signed_in(request)
    models = await run_in_threadpool(chat_models, request, who)
    stores = (await run_in_threadpool(routes_vector_stores.list_stores, request, None, None,
                                      100, "desc", who))["data"]
    chosen = [m for m in (model or []) if m in models]
    # a checkpoint's "chat with it" link: the model next to its base, to compare them
    picked = (chosen + [m for m in models if m not in chosen])[:max(2, len(chosen))]
    return page(request, "playground.html", who, s, models=models, stores=stores,
                picked=picked)
