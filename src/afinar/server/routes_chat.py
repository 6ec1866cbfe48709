"""``/v1/chat/completions`` and the legacy ``/v1/completions`` over ``afinar.models.Generator``.

JSON mode is constrained decoding (``afinar.models.constrained``): a system hint says what to
write, and the sampler can only emit tokens that keep the reply valid JSON (for ``json_schema``:
valid for the schema), so a reply that ends (``stop``) parses; one cut by ``max_tokens`` ends with
``length``, as OpenAI's does. ``strict: true`` enforces the schema exactly and rejects keywords
that cannot be enforced (400); without it such keywords are ignored. Tool calls are parsed from
the text (Hermes ``<tool_call>``), never forced. With tools a stream is one buffered reply.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from afinar import __version__
from afinar.errors import AfinarError, InvalidRequest
from afinar.ids import new_id
from afinar.models.constrained import ANY_OBJECT, json_hint
from afinar.models.toolcalls import parse_tool_calls  # noqa: F401  (re-exported)
from afinar.models.generation import GenerationResult, GenerationStream, Generator, SamplingParams
from afinar.server.common import Auth, error_body

router = APIRouter(dependencies=[Auth])
FINGERPRINT = f"fp_afinar_{__version__}"


_Stop = Annotated[str, Field(min_length=1)]
_Stops = Annotated[list[_Stop], Field(max_length=4)]


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None  # {"name", "schema", "strict"}


class _Sampled(BaseModel):  # unknown fields are ignored (pydantic's default)
    model: str
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: _Stop | _Stops | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1, le=8)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    stream: bool = False
    stream_options: dict[str, Any] | None = None  # {"include_usage": bool}
    user: str | None = None

    def per_choice(self, max_tokens: int | None) -> list[SamplingParams]:
        """One ``SamplingParams`` per choice: seeds ``seed, seed+1, ...`` when a seed is given."""
        keys = ("temperature", "top_p", "stop", "seed", "frequency_penalty", "presence_penalty")
        p = SamplingParams(**{k: getattr(self, k) for k in keys if getattr(self, k) is not None},
                           max_tokens=max_tokens)  # the fields above carry its constraints
        if p.seed is None:
            return [p] * self.n
        return [p.model_copy(update={"seed": (p.seed + i) % 2**63}) for i in range(self.n)]

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatRequest(_Sampled):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


class CompletionRequest(_Sampled):
    prompt: str | Annotated[list[str], Field(min_length=1)]
    max_tokens: int | None = Field(16, ge=1)
    echo: Literal[False] = False  # echoing the prompt back is not supported


def _active_tools(req: ChatRequest) -> list[dict[str, Any]] | None:
    if not req.tools or req.tool_choice == "none":
        return None
    if isinstance(req.tool_choice, dict):
        want = (req.tool_choice.get("function") or {}).get("name")
        if named := [t for t in req.tools if t.get("function", t).get("name") == want]:
            return named
        raise InvalidRequest(f"tool_choice names {want!r}, not in tools", param="tool_choice")
    return req.tools


def json_mode(fmt: ResponseFormat | None) -> tuple[dict[str, Any] | None, dict | None]:
    """(the schema to constrain to, the schema to show in the hint); ``(None, None)`` for text."""
    if fmt is None or fmt.type == "text":
        return None, None
    if fmt.type == "json_object":
        return ANY_OBJECT, None
    spec = fmt.json_schema or {}
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequest("response_format json_schema needs json_schema.schema",
                             param="response_format.json_schema")
    if spec.get("strict"):
        return schema, schema
    own = schema.get("x-guidance")  # llguidance's options inside a schema
    lenient = {"lenient": True, **(own if isinstance(own, dict) else {})}  # unknown keys ignored
    return {**schema, "x-guidance": lenient}, schema


def _drain(streams: list[GenerationStream]) -> list[GenerationResult]:
    for s in streams:
        collections.deque(s, maxlen=0)  # run it to the end
    return [s.result for s in streams]


def _usage(results: list[GenerationResult], n: int) -> dict[str, int]:
    prompt = sum(r.prompt_tokens for r in results[::n])  # each prompt counted once
    done = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def _message(i: int, r: GenerationResult, names: set[str] | None) -> dict[str, Any]:
    content, calls = parse_tool_calls(r.text, names) if names is not None else (r.text, [])
    msg = {"role": "assistant", "content": content, "refusal": None}
    return {"index": i, "message": {**msg, "tool_calls": calls} if calls else msg,
            "logprobs": None, "finish_reason": "tool_calls" if calls else r.finish_reason}


def _part(i: int, delta: Any, chat: bool, finish: str | None = None) -> dict[str, Any]:
    return {"index": i, "delta" if chat else "text": delta, "logprobs": None,
            "finish_reason": finish}


def _sse(obj: str, model: str, parts: Iterator[tuple[list[dict], dict | None]]
         ) -> StreamingResponse:
    """``data:`` chunks, then ``[DONE]``; a late error becomes OpenAI's error object as an event."""
    head = {"id": new_id("chatcmpl-" if obj.startswith("chat") else "cmpl-"), "object": obj,
            "created": int(time.time()), "model": model, "system_fingerprint": FINGERPRINT}

    def events() -> Iterator[str]:
        try:
            for choices, usage in parts:
                body = {**head, "choices": choices, **({"usage": usage} if usage else {})}
                yield f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
        except AfinarError as e:
            yield f"data: {json.dumps(error_body(e.message, e.http_status, e.code, e.param))}\n\n"
        yield "data: [DONE]\n\n"
    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _live(streams: list[GenerationStream], n: int, usage: bool, chat: bool) -> Iterator[tuple]:
    for i, s in enumerate(streams):
        if chat:
            yield [_part(i, {"role": "assistant", "content": ""}, chat)], None
        for text in s:
            yield [_part(i, {"content": text} if chat else text, chat)], None
        yield [_part(i, {} if chat else "", chat, s.result.finish_reason)], None
    if usage:
        yield [], _usage([s.result for s in streams], n)


def _replay(choices: list[dict], usage: dict | None) -> Iterator[tuple]:
    for c in choices:
        i, msg = c["index"], c["message"]
        yield [_part(i, {"role": "assistant", "content": msg["content"]}, True)], None
        if calls := [{"index": k, **x} for k, x in enumerate(msg.get("tool_calls", []))]:
            yield [_part(i, {"tool_calls": calls}, True)], None
        yield [_part(i, {}, True, c["finish_reason"])], None
    if usage:
        yield [], usage


async def _file_search_chat(req: ChatRequest, request: Request, tool: dict[str, Any]):
    """afinar's extension: ``tools=[{"type": "file_search", "vector_store_ids": [...]}]`` on
    chat completions answers from the vector stores; the message carries ``annotations`` of type
    ``file_citation`` (file_id, filename, index, quote), as the Responses API does."""
    from afinar.server.routes_responses import grounded_chat

    p = req.per_choice(req.max_completion_tokens or req.max_tokens)[0]
    text, annotations, usage = await run_in_threadpool(  # the caller's groups (auth set them)
        grounded_chat, request.app, req.model, req.messages, tool, p,
        groups=request.state.caller.search_groups)
    choice = {"index": 0, "finish_reason": "stop", "logprobs": None,
              "message": {"role": "assistant", "content": text, "refusal": None,
                          "annotations": annotations}}
    if req.stream:
        return _sse("chat.completion.chunk", req.model,
                    _replay([choice], usage if req.include_usage else None))
    return {"id": new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
            "model": req.model, "choices": [choice], "usage": usage,
            "system_fingerprint": FINGERPRINT}


@router.post("/chat/completions")
async def chat_completions(req: ChatRequest, request: Request):
    fs = [t for t in req.tools or [] if t.get("type") == "file_search"]
    if fs and req.tool_choice != "none":
        return await _file_search_chat(req, request, fs[0])
    lm = await run_in_threadpool(request.app.state.models.get, req.model, None,
                                 request.app.state.settings)
    tools, per_choice = _active_tools(req), req.per_choice(req.max_completion_tokens
                                                           or req.max_tokens)
    names = {t.get("function", t).get("name") for t in tools} if tools else None
    messages, (schema, shown) = req.messages, json_mode(req.response_format)
    if schema is not None:
        messages = json_hint(messages, shown)
        per_choice = [p.model_copy(update={"json_schema": schema}) for p in per_choice]
    streams = await run_in_threadpool(
        lambda: [Generator(lm).stream(messages, p, tools) for p in per_choice])
    if req.stream and not tools:
        return _sse("chat.completion.chunk", req.model,
                    _live(streams, req.n, req.include_usage, chat=True))
    results = await run_in_threadpool(_drain, streams)
    choices, usage = [_message(i, r, names) for i, r in enumerate(results)], _usage(results, req.n)
    if req.stream:
        return _sse("chat.completion.chunk", req.model,
                    _replay(choices, usage if req.include_usage else None))
    return {"id": new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
            "model": req.model, "choices": choices, "usage": usage,
            "system_fingerprint": FINGERPRINT}


@router.post("/completions")
async def completions(req: CompletionRequest, request: Request):
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    lm = await run_in_threadpool(request.app.state.models.get, req.model, None,
                                 request.app.state.settings)
    per_choice = req.per_choice(req.max_tokens)
    streams = await run_in_threadpool(
        lambda: [Generator(lm).stream_text(x, p) for x in prompts for p in per_choice])
    if req.stream:
        return _sse("text_completion", req.model,
                    _live(streams, req.n, req.include_usage, chat=False))
    results = await run_in_threadpool(_drain, streams)
    return {"id": new_id("cmpl-"), "object": "text_completion", "created": int(time.time()),
            "model": req.model, "system_fingerprint": FINGERPRINT, "usage": _usage(results, req.n),
            "choices": [{"text": r.text, "index": i, "finish_reason": r.finish_reason,
                         "logprobs": None} for i, r in enumerate(results)]}
