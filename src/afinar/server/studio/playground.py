"""Playground: 2-4 models side by side on the same prompt and seed, each with or without a
knowledge base. The page's script calls ``POST /v1/chat/completions`` for each column
(streamed; with a knowledge base, the ``file_search`` tool, whose answer carries the
citations); this module lists what the caller may pick, and takes the feedback on an answer.

Feedback (thumbs up/down, a corrected answer) is a form post to ``/playground/feedback`` with
the session's CSRF token, handed to the route function of ``POST /v1/feedback``
(``routes_feedback.create_feedback``) with the session's caller: the same checks, the same
scope (a key rates only answers its groups may read; any other id is the API's 404), the same
PII redaction and audit. The page's script sends the form with ``Accept: application/json`` and
gets the feedback object or the API's error; a plain form post gets a page. Answers are logged,
and so may be rated, only with ``AFINAR_LOG_REQUESTS=on``: without it the page says so."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from afinar.errors import AfinarError, InvalidRequest
from afinar.server import routes_feedback, routes_vector_stores
from afinar.server.common import error_response
from afinar.server.studio.datasets import chat_models
from afinar.server.studio.render import error_page, form_check, page, pydantic_message, \
    signed_in

router = APIRouter(include_in_schema=False)
TYPES = ("rating", "correction")  # what the playground's controls send
RATINGS = {"1": 1, "+1": 1, "-1": -1}


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
                picked=picked, feedback=bool(request.app.state.settings.log_requests))


def feedback_body(form: Any) -> routes_feedback.FeedbackRequest:
    """The feedback form as the API's request body (``InvalidRequest`` naming the field, or
    pydantic's ``ValidationError``, when it does not fit)."""
    kind = str(form.get("type") or "")
    if kind not in TYPES:
        raise InvalidRequest(f"type must be one of {', '.join(TYPES)}, not {kind!r}",
                             param="type")
    fields: dict[str, Any] = {"request_id": str(form.get("request_id") or ""), "type": kind}
    if kind == "rating":
        raw = str(form.get("rating") or "").strip()
        if raw not in RATINGS:
            raise InvalidRequest(f"rating must be 1 or -1, not {raw!r}", param="rating")
        fields["rating"] = RATINGS[raw]
    else:
        fields["correction"] = str(form.get("correction") or "")
    if str(form.get("reason") or "").strip():
        fields["reason"] = str(form.get("reason")).strip()
    return routes_feedback.FeedbackRequest.model_validate(fields)


@router.post("/playground/feedback", response_class=HTMLResponse)
async def feedback(request: Request) -> Any:
    form = await request.form()
    s, who = form_check(request, form)
    wants_json = "application/json" in request.headers.get("accept", "")
    try:
        try:
            body = feedback_body(form)
        except ValidationError as e:
            raise InvalidRequest(pydantic_message(e), param="feedback") from None
        rec = await routes_feedback.create_feedback(body, request, who)
    except AfinarError as e:
        if wants_json:
            return error_response(e.message, e.http_status, e.code, e.param)
        return error_page(request, who, s, "Feedback", e)
    if wants_json:
        return JSONResponse(rec)
    return page(request, "feedback.html", who, s, feedback=rec)
