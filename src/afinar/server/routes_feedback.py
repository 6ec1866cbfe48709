"""``POST /v1/feedback`` and ``GET /v1/feedback``: feedback on served answers, an afinar
extension (OpenAI has no such endpoint).

A chat completion, completion or response logged under its id (``AFINAR_LOG_REQUESTS=on``,
``afinar.server.request_log``) takes a ``rating`` (+1/-1 with an optional reason), a
``correction`` (the answer it should have given) or a ``preference`` (the best of its ``n``
choices). Only a key that may read the request (``afinar.store.feedback``: its project, the key
that sent it and keys sharing its groups, admins) gives or sees feedback on it; any other id is a
404. The list is a cursor page, newest first. Writes are audited (``server/audit.py``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AfterValidator, Field
from starlette.concurrency import run_in_threadpool

from afinar.data.feedback import add_feedback
from afinar.server.common import Auth, Caller, page
from afinar.server.schemas import Id, Strict
from afinar.store.feedback import MAX_REASON, Feedback, feedback_object

router = APIRouter(dependencies=[Auth])
MAX_CORRECTION = 65_536  # characters


def _plus_minus_one(v: int) -> int:
    if v not in (1, -1):
        raise ValueError("rating must be 1 or -1")
    return v


class FeedbackRequest(Strict):
    """The body of ``POST /v1/feedback``: ``type`` says which one field carries the feedback
    (``rating``, ``correction`` or ``preferred_index``); ``choice_index`` names the rated or
    corrected choice (default 0)."""
    request_id: Id
    type: Literal["rating", "correction", "preference"]
    rating: Annotated[int, AfterValidator(_plus_minus_one)] | None = None  # not true/false
    reason: Annotated[str, Field(max_length=MAX_REASON)] | None = None
    correction: Annotated[str, Field(min_length=1, max_length=MAX_CORRECTION)] | None = None
    choice_index: int | None = Field(None, ge=0, le=1023)
    preferred_index: int | None = Field(None, ge=0, le=1023)


def _feedback(request: Request) -> Feedback:
    return Feedback(request.app.state.settings)


@router.post("/feedback")
async def create_feedback(req: FeedbackRequest, request: Request, who: Caller = Auth) -> dict:
    rec = await run_in_threadpool(
        add_feedback, _feedback(request), who, req.request_id, req.type, rating=req.rating,
        reason=req.reason, correction=req.correction, choice_index=req.choice_index,
        preferred_index=req.preferred_index)
    request.state.audit_object = rec.id
    return feedback_object(rec)


@router.get("/feedback")
def list_feedback(request: Request, after: str | None = None,
                  limit: int = Query(20, ge=1, le=100),
                  request_id: str | None = Query(None, max_length=256),
                  type: Literal["rating", "correction", "preference"] | None = None,
                  who: Caller = Auth) -> dict:
    items = _feedback(request).items(who, request_id=request_id, type=type)
    return page([feedback_object(f) for f, _ in items], after, limit)
