"""The one hook the generating routes call to keep what they served, for feedback
(``afinar.store.feedback``): with ``AFINAR_LOG_REQUESTS`` off (the default) it does nothing.

On, a chat completion, completion or response is stored under its id with its prompt and its
answers, PII-redacted first (``afinar.data.pii.Redactor``: one redactor per request, so an email
in the prompt and in the answer becomes the same ``<EMAIL_1>``), owned by the request's key
(its project and groups decide who may read it and give feedback). ``record`` takes the response
body a route returns; a stream is watched chunk by chunk by a ``Tap`` and recorded once it ends.
A failure to log is written to the server's log and never fails the request that was served.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from afinar.data.pii import Redactor
from afinar.store.feedback import Feedback

log = logging.getLogger(__name__)


def enabled(request: Request) -> bool:
    return bool(request.app.state.settings.log_requests)


def _store(request: Request, request_id: str, kind: str, model: str, prompt: Any,
           choices: list[dict[str, Any]], stream: bool, grounded: bool = False) -> None:
    red = Redactor()
    prompt, choices = red.redact_value(prompt), red.redact_value(choices)
    info = {"stream": stream, **({"redacted": dict(red.counts)} if red.counts else {}),
            **({"grounded": True} if grounded else {})}
    try:
        Feedback(request.app.state.settings).log_request(
            request_id=request_id, kind=kind, model=model, prompt=prompt, choices=choices,
            who=request.state.caller, info=info)
    except Exception:  # the log must never fail a request that was served
        log.exception("could not log request %s", request_id)


def _chat_choice(c: dict[str, Any]) -> dict[str, Any]:
    msg = c.get("message") or {}
    out = {"index": c["index"], "text": msg.get("content") or "", "prompt_index": 0,
           "finish_reason": c.get("finish_reason")}
    if msg.get("tool_calls"):
        out["tool_calls"] = msg["tool_calls"]
    return out


def _response_choice(body: dict[str, Any]) -> dict[str, Any]:
    text = "".join(p.get("text") or "" for item in body.get("output", [])
                   if item.get("type") == "message" for p in item.get("content", [])
                   if p.get("type") == "output_text")
    calls = [{"id": i["call_id"], "type": "function",
              "function": {"name": i["name"], "arguments": i["arguments"]}}
             for i in body.get("output", []) if i.get("type") == "function_call"]
    out = {"index": 0, "text": text, "prompt_index": 0, "finish_reason": body.get("status")}
    return {**out, "tool_calls": calls} if calls else out


async def record(request: Request, kind: str, prompt: Any, body: dict[str, Any],
                 grounded: bool = False) -> dict[str, Any]:
    """Log a non-streamed reply (``kind``: chat, completion, response) when logging is on;
    return ``body`` unchanged. ``prompt``: the chat messages, or the completion prompts;
    ``grounded``: the answer came from a file_search (the drift monitor counts its
    "not in the sources" answers)."""
    if not enabled(request):
        return body
    if kind == "chat":
        choices = [_chat_choice(c) for c in body["choices"]]
    elif kind == "completion":
        per = max(1, len(body["choices"]) // max(1, len(prompt)))
        choices = [{"index": c["index"], "text": c["text"], "prompt_index": c["index"] // per,
                    "finish_reason": c.get("finish_reason")} for c in body["choices"]]
    else:
        choices = [_response_choice(body)]
    await run_in_threadpool(_store, request, body["id"], kind, body["model"], prompt, choices,
                            False, grounded)
    return body


class Tap:
    """Watches a stream's chunks (chat or completion) and logs the whole answers at its end."""

    def __init__(self, request: Request, kind: str, prompt: Any, n: int, grounded: bool = False):
        self.request, self.kind, self.prompt, self.n = request, kind, prompt, max(1, n)
        self.grounded = grounded
        self.id: str | None = None
        self.model = ""
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, str | None] = {}
        self.calls: dict[int, list[dict[str, Any]]] = {}

    def chunk(self, body: dict[str, Any]) -> None:
        self.id, self.model = body["id"], body["model"]
        for c in body.get("choices", []):
            i = c["index"]
            delta = c.get("delta")
            piece = (delta or {}).get("content") if isinstance(delta, dict) else c.get("text")
            self.texts.setdefault(i, []).append(piece or "")
            if isinstance(delta, dict) and delta.get("tool_calls"):
                self.calls.setdefault(i, []).extend(
                    {k: v for k, v in t.items() if k != "index"} for t in delta["tool_calls"])
            if c.get("finish_reason"):
                self.finish[i] = c["finish_reason"]

    def done(self) -> None:
        if self.id is None:
            return
        choices = []
        for i in sorted(self.texts):
            c = {"index": i, "text": "".join(self.texts[i]), "finish_reason": self.finish.get(i),
                 "prompt_index": i // self.n if self.kind == "completion" else 0}
            choices.append({**c, "tool_calls": self.calls[i]} if self.calls.get(i) else c)
        _store(self.request, self.id, self.kind, self.model, self.prompt, choices, stream=True,
               grounded=self.grounded)


def tap(request: Request, kind: str, prompt: Any, n: int = 1, grounded: bool = False
        ) -> Tap | None:
    """A ``Tap`` for a stream when logging is on, else None."""
    return Tap(request, kind, prompt, n, grounded) if enabled(request) else None
