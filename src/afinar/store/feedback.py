"""The request log and feedback on served answers (an afinar extension of the API).

With ``AFINAR_LOG_REQUESTS=on`` (off by default) the server keeps each chat completion,
completion and response under its id: the prompt and the answers, already PII-redacted by the
caller (``afinar.server.request_log``), for ``AFINAR_LOG_RETENTION_DAYS`` days (30 by default).
Older entries, and the feedback on them, are deleted whenever a request is logged or feedback is
read (``Feedback.prune``).

Feedback attaches to a logged request's id: a ``rating`` (+1/-1, optional reason), a
``correction`` (the answer it should have given) or a ``preference`` (the best of its ``n``
choices). Who may read a logged request, and so give or see feedback on it, is the one rule of
``afinar.store.access`` applied as for a fine-tuning job: the request's project, then the key
that sent it and keys sharing one of its groups, and admins (a request made without a key, in
local development mode: admins only). Anything else answers 404, as an unknown id.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from afinar.errors import InvalidRequest, NotFound
from afinar.ids import new_id
from afinar.settings import Settings, get_settings
from afinar.store.access import ADMINS, Caller, key_principal
from afinar.store.db import get_database
from afinar.store.tables import Base

KINDS = ("chat", "completion", "response")
FIELD_OF = {"rating": "rating", "correction": "correction", "preference": "preferred_index"}
TYPES = tuple(FIELD_OF)  # feedback type -> the field that carries it
MAX_REASON = 4096
DAY = 86400.0


class RequestRecord(Base):
    """A served request: ``prompt`` is the chat messages (chat, responses) or the list of prompt
    strings (completions); ``choices`` one ``{"index", "text", "prompt_index", "finish_reason"}``
    per answer (``tool_calls`` when it called tools)."""

    __tablename__ = "request_log"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(256))
    project_id: Mapped[str] = mapped_column(String(64), default="default")
    owner_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    owner_groups: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    prompt: Mapped[Any] = mapped_column(JSON)
    choices: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class FeedbackRecord(Base):
    """One piece of feedback on a logged request (``type``: rating, correction, preference)."""

    __tablename__ = "feedback"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    type: Mapped[str] = mapped_column(String(16))
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(String(MAX_REASON), nullable=True)
    correction: Mapped[str | None] = mapped_column(String, nullable=True)
    choice_index: Mapped[int] = mapped_column(Integer, default=0)
    preferred_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    key_name: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64))
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def request_readers(rec: RequestRecord) -> list[str]:
    """The principals that may read a logged request (as a job's: its key and that key's groups
    at the time; admins only for a request made without a key)."""
    if rec.owner_key_id:
        return sorted(set(rec.owner_groups or []) | {key_principal(rec.owner_key_id)})
    return [ADMINS]


def may_read_request(who: Caller, rec: RequestRecord) -> bool:
    return who.in_project(rec.project_id) and who.may_read(request_readers(rec))


def feedback_object(rec: FeedbackRecord) -> dict[str, Any]:
    """The API's ``feedback`` object (afinar's extension)."""
    return {"id": rec.id, "object": "feedback", "created_at": int(rec.created_at),
            "request_id": rec.request_id, "type": rec.type, "rating": rec.rating,
            "reason": rec.reason, "correction": rec.correction,
            "choice_index": rec.choice_index, "preferred_index": rec.preferred_index}


class Feedback:
    """The request log and the feedback on it, for one database."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.db = get_database(self.settings.db_url)

    @property
    def retention_s(self) -> float:
        return self.settings.log_retention_days * DAY

    def prune(self, now: float | None = None) -> int:
        """Delete the requests older than the retention period and their feedback; return how
        many requests went."""
        cutoff = (time.time() if now is None else now) - self.retention_s
        with self.db.session() as s:
            old = list(s.scalars(select(RequestRecord.id).where(
                RequestRecord.created_at < cutoff)))
            for i in range(0, len(old), 500):
                ids = old[i:i + 500]
                s.execute(delete(FeedbackRecord).where(FeedbackRecord.request_id.in_(ids)))
                s.execute(delete(RequestRecord).where(RequestRecord.id.in_(ids)))
        return len(old)

    def log_request(self, *, request_id: str, kind: str, model: str, prompt: Any,
                    choices: list[dict[str, Any]], who: Caller,
                    info: dict[str, Any] | None = None, now: float | None = None
                    ) -> RequestRecord:
        """Keep a served request (its prompt and answers already redacted) under its id."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        now = time.time() if now is None else now
        self.prune(now)
        rec = RequestRecord(id=request_id, kind=kind, model=model[:256], project_id=who.project,
                            owner_key_id=who.key_id, owner_groups=sorted(who.groups),
                            created_at=now, prompt=prompt, choices=choices, info=info or {})
        with self.db.session() as s:
            s.add(rec)
        return rec

    def request(self, who: Caller, request_id: str, param: str = "request_id"
                ) -> RequestRecord:
        """The logged request if the caller may read it; otherwise the 404 of an unknown id."""
        with self.db.session() as s:
            rec = s.get(RequestRecord, request_id)
        if rec is None or rec.created_at < time.time() - self.retention_s \
                or not may_read_request(who, rec):
            raise NotFound(f"no logged request {request_id!r} (requests are kept only with "
                           "AFINAR_LOG_REQUESTS=on, for AFINAR_LOG_RETENTION_DAYS days)",
                           param=param)
        return rec

    def add(self, who: Caller, request_id: str, type: str, *, rating: int | None = None,
            reason: str | None = None, correction: str | None = None,
            choice_index: int | None = None, preferred_index: int | None = None
            ) -> FeedbackRecord:
        """Attach feedback to a request the caller may read; the fields must fit the type and
        the request's choices (``InvalidRequest`` naming the field otherwise)."""
        rec = self.request(who, request_id)
        _check(rec, type, rating, reason, correction, choice_index, preferred_index)
        fb = FeedbackRecord(
            id=new_id("fb-"), request_id=rec.id, type=type, rating=rating,
            reason=reason or None, correction=correction,
            choice_index=(preferred_index if type == "preference" else choice_index) or 0,
            preferred_index=preferred_index, created_at=time.time(), key_id=who.key_id,
            key_name=who.name[:128], project_id=rec.project_id, info={})
        with self.db.session() as s:
            s.add(fb)
        return fb

    def items(self, who: Caller, *, request_id: str | None = None, project: str | None = None,
              type: str | None = None) -> list[tuple[FeedbackRecord, RequestRecord]]:
        """(feedback, its request) the caller may read, newest first."""
        self.prune()
        q = select(FeedbackRecord, RequestRecord).join(
            RequestRecord, RequestRecord.id == FeedbackRecord.request_id)
        if request_id is not None:
            q = q.where(FeedbackRecord.request_id == request_id)
        if project is not None:
            q = q.where(RequestRecord.project_id == project)
        elif not who.owner:
            q = q.where(RequestRecord.project_id == who.project)
        if type is not None:
            q = q.where(FeedbackRecord.type == type)
        q = q.order_by(FeedbackRecord.created_at.desc(), FeedbackRecord.seq.desc())
        with self.db.session() as s:
            rows = [(f, r) for f, r in s.execute(q).all()]
        return [(f, r) for f, r in rows if may_read_request(who, r)]


def _check(rec: RequestRecord, type: str, rating: int | None, reason: str | None,
           correction: str | None, choice_index: int | None,
           preferred_index: int | None) -> None:
    if type not in TYPES:
        raise InvalidRequest(f"type must be one of {', '.join(TYPES)}, not {type!r}",
                             param="type")
    given = {"rating": rating, "correction": correction, "preferred_index": preferred_index}
    need = FIELD_OF[type]
    for name, value in given.items():
        if name == need and value is None:
            raise InvalidRequest(f"a {type} needs {name}", param=name)
        if name != need and value is not None:
            raise InvalidRequest(f"{name} does not belong to a {type} (give type "
                                 f"{next(t for t, f in FIELD_OF.items() if f == name)!r})",
                                 param=name)
    if type == "rating" and rating not in (1, -1):
        raise InvalidRequest(f"rating must be 1 or -1, not {rating!r}", param="rating")
    if type == "correction" and not correction.strip():
        raise InvalidRequest("correction is empty", param="correction")
    if reason is not None and len(reason) > MAX_REASON:
        raise InvalidRequest(f"reason is longer than {MAX_REASON} characters", param="reason")
    n = len(rec.choices)
    if type == "preference":
        if choice_index is not None:
            raise InvalidRequest("a preference names its choice with preferred_index",
                                 param="choice_index")
        if not 0 <= preferred_index < n:
            raise InvalidRequest(f"preferred_index {preferred_index} is not a choice of "
                                 f"{rec.id} (it has {n})", param="preferred_index")
        group = rec.choices[preferred_index].get("prompt_index", 0)
        if sum(c.get("prompt_index", 0) == group for c in rec.choices) < 2:
            raise InvalidRequest(f"{rec.id} has one choice for that prompt: a preference needs "
                                 "a request made with n >= 2", param="preferred_index")
    elif choice_index is not None and not 0 <= choice_index < n:
        raise InvalidRequest(f"choice_index {choice_index} is not a choice of {rec.id} (it has "
                             f"{n})", param="choice_index")

