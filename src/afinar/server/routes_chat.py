"""``/v1/chat/completions`` and the legacy ``/v1/completions`` over ``afinar.models.Generator``.

JSON mode is constrained decoding (``afinar.models.constrained``): a system hint says what to
write, and the sampler can only emit tokens that keep the reply valid JSON (for ``json_schema``:
valid for the schema), so a reply that ends (``stop``) parses; one cut by ``max_tokens`` ends with
``length``, as OpenAI's does. ``strict: true`` enforces the schema exactly and rejects keywords
that cannot be enforced (400); without it such keywords are ignored. Tool calls are parsed from
the text (Hermes ``<tool_call>``); ``tool_choice`` ``"required"`` or a named function forces a
call: the reply starts with ``<tool_call>`` and the call's JSON is constrained to
``{"name": <one of the tools>, "arguments": <its parameters' schema>}``
(``models.toolcalls.forced_call_schema``). With tools a stream is one buffered reply.

Sampling fields a request omits (``temperature``, ``top_p``, ...) take the model's recommended
values (``Catalog.sampling_defaults``: the catalog's entry or ``generation_config.json``), as
vLLM's ``--generation-config auto`` does; OpenAI's defaults (1.0) only when the model names none.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from afinar import __version__
from afinar.errors import AfinarError, InvalidRequest
from afinar.ids import new_id
from afinar.models.constrained import json_hint
from afinar.models.generation import GenerationResult, GenerationStream, Generator, SamplingParams
from afinar.models.toolcalls import FORCED_PREFIX, forced_call_schema, parse_tool_calls
from afinar.rag.kb import KnowledgeBases
from afinar.server import request_log
from afinar.server.common import Auth, error_body
from afinar.server.schemas import ChatRequest, CompletionRequest, NamedToolChoice, Sampled
from afinar.server.routes_responses import grounded_chat
from afinar.server.sampling import json_mode, sampling_defaults
from afinar.server.vector_stores import check_stores

router = APIRouter(dependencies=[Auth])
FINGERPRINT = f"fp_afinar_{__version__}"


def per_choice(req: Sampled, max_tokens: int | None, defaults: dict[str, Any]
               ) -> list[SamplingParams]:
    """One ``SamplingParams`` per choice: what the request gives, else the model's recommended
    sampling, else OpenAI's defaults; seeds ``seed, seed+1, ...`` when a seed is given."""
    p = SamplingParams.with_defaults({**req.sampling(), "max_tokens": max_tokens}, defaults)
    if p.seed is None:
        return [p] * req.n
    return [p.model_copy(update={"seed": (p.seed + i) % 2**63}) for i in range(req.n)]


def _unsupported(req: Sampled) -> None:
    """Fields OpenAI's schema allows that afinar cannot honour: 400, never silently ignored."""
    if getattr(req, "logprobs", None):
        raise InvalidRequest("logprobs are not supported", code="unsupported_parameter",
                             param="logprobs")
    if req.logit_bias:
        raise InvalidRequest("logit_bias is not supported", code="unsupported_parameter",
                             param="logit_bias")
    if isinstance(req, ChatRequest):
        if req.functions is not None or req.function_call is not None:
            raise InvalidRequest("functions and function_call are deprecated and not supported"
                                 ": use tools and tool_choice", code="unsupported_parameter",
                                 param="functions" if req.functions is not None
                                 else "function_call")
        if req.modalities and "audio" in req.modalities:
            raise InvalidRequest("audio output is not supported", param="modalities",
                                 code="unsupported_parameter")
        for i, m in enumerate(req.messages):
            parts = m.content if isinstance(m.content, list) else []
            for j, part in enumerate(parts):
                if part.type not in ("text", "refusal"):
                    raise InvalidRequest(
                        f"content type {part.type!r} is not supported: these models read text "
                        "only", code="unsupported_content", param=f"messages.{i}.content.{j}")


def _active_tools(req: ChatRequest) -> tuple[list[dict[str, Any]] | None, str | None, bool]:
    """(the function tools the model may call, the one it must call, whether a call is
    forced)."""
    tools = req.function_tools()
    choice = req.tool_choice
    if not tools:
        if isinstance(choice, NamedToolChoice) or choice == "required":
            raise InvalidRequest("tool_choice is only allowed when tools are specified",
                                 param="tool_choice")
        return None, None, False
    if choice == "none":
        return None, None, False
    if isinstance(choice, NamedToolChoice):
        want = choice.function.name
        if named := [t for t in tools if t["function"]["name"] == want]:
            return named, want, True
        raise InvalidRequest(f"tool_choice names {want!r}, not in tools", param="tool_choice")
    return tools, None, choice == "required"


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


def _sse(obj: str, model: str, parts: Iterator[tuple[list[dict], dict | None]],
         tap: request_log.Tap | None = None) -> StreamingResponse:
    """``data:`` chunks, then ``[DONE]``; a late error becomes OpenAI's error object as an event.
    ``tap`` (logging on) sees every chunk and logs the answers once the stream is whole."""
    head = {"id": new_id("chatcmpl-" if obj.startswith("chat") else "cmpl-"), "object": obj,
            "created": int(time.time()), "model": model, "system_fingerprint": FINGERPRINT}

    def events() -> Iterator[str]:
        try:
            for choices, usage in parts:
                body = {**head, "choices": choices, **({"usage": usage} if usage else {})}
                if tap is not None:
                    tap.chunk(body)
                yield f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
            if tap is not None:
                tap.done()
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


async def _file_search_chat(req: ChatRequest, request: Request, tool: dict[str, Any],
                            defaults: dict[str, Any]):
    """afinar's extension: ``tools=[{"type": "file_search", "vector_store_ids": [...]}]`` on
    chat completions answers from the vector stores; the message carries ``annotations`` of type
    ``file_citation`` (file_id, filename, index, quote), as the Responses API does."""
    p = per_choice(req, req.max_completion_tokens or req.max_tokens, defaults)[0]
    check_stores(KnowledgeBases(request.app.state.settings), tool.get("vector_store_ids"),
                 request.state.caller)  # another project's store: 404
    text, annotations, usage = await run_in_threadpool(  # the caller's groups (auth set them)
        grounded_chat, request.app, req.model, req.chat_messages(), tool, p,
        groups=request.state.caller.search_groups)
    choice = {"index": 0, "finish_reason": "stop", "logprobs": None,
              "message": {"role": "assistant", "content": text, "refusal": None,
                          "annotations": annotations}}
    if req.stream:
        return _sse("chat.completion.chunk", req.model,
                    _replay([choice], usage if req.include_usage else None),
                    request_log.tap(request, "chat", req.chat_messages(), grounded=True))
    return await request_log.record(request, "chat", req.chat_messages(), {
        "id": new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
        "model": req.model, "choices": [choice], "usage": usage,
        "system_fingerprint": FINGERPRINT}, grounded=True)


@router.post("/chat/completions")
async def chat_completions(req: ChatRequest, request: Request):
    _unsupported(req)
    defaults = await run_in_threadpool(sampling_defaults, request, req.model)
    fs = req.file_search()
    if fs is not None and req.tool_choice != "none":
        return await _file_search_chat(req, request, fs.spec(), defaults)
    lm = await run_in_threadpool(request.app.state.models.get, req.model, None,
                                 request.app.state.settings)
    (tools, name, forced), messages = _active_tools(req), req.chat_messages()
    per = per_choice(req, req.max_completion_tokens or req.max_tokens, defaults)
    names = {t["function"]["name"] for t in tools} if tools else None
    schema, shown = json_mode(req.response_format)
    prefix = ""
    if forced:  # the reply is a call of one of ``tools``, by constrained decoding
        schema, shown, prefix = forced_call_schema(tools, name), None, FORCED_PREFIX
    elif schema is not None:
        messages = json_hint(messages, shown)
    if schema is not None:
        per = [p.model_copy(update={"json_schema": schema}) for p in per]
    streams = await run_in_threadpool(
        lambda: [Generator(lm).stream(messages, p, tools, *([prefix] if prefix else []))
                 for p in per])
    if req.stream and not tools:
        return _sse("chat.completion.chunk", req.model,
                    _live(streams, req.n, req.include_usage, chat=True),
                    request_log.tap(request, "chat", req.chat_messages(), req.n))
    results = await run_in_threadpool(_drain, streams)
    choices, usage = [_message(i, r, names) for i, r in enumerate(results)], _usage(results, req.n)
    if req.stream:
        return _sse("chat.completion.chunk", req.model,
                    _replay(choices, usage if req.include_usage else None),
                    request_log.tap(request, "chat", req.chat_messages(), req.n))
    return await request_log.record(request, "chat", req.chat_messages(), {
        "id": new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
        "model": req.model, "choices": choices, "usage": usage,
        "system_fingerprint": FINGERPRINT})


@router.post("/completions")
async def completions(req: CompletionRequest, request: Request):
    _unsupported(req)
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    defaults = await run_in_threadpool(sampling_defaults, request, req.model)
    lm = await run_in_threadpool(request.app.state.models.get, req.model, None,
                                 request.app.state.settings)
    per = per_choice(req, req.max_tokens, defaults)
    streams = await run_in_threadpool(
        lambda: [Generator(lm).stream_text(x, p) for x in prompts for p in per])
    if req.stream:
        return _sse("text_completion", req.model,
                    _live(streams, req.n, req.include_usage, chat=False),
                    request_log.tap(request, "completion", prompts, req.n))
    results = await run_in_threadpool(_drain, streams)
    return await request_log.record(request, "completion", prompts, {
        "id": new_id("cmpl-"), "object": "text_completion", "created": int(time.time()),
        "model": req.model, "system_fingerprint": FINGERPRINT, "usage": _usage(results, req.n),
        "choices": [{"text": r.text, "index": i, "finish_reason": r.finish_reason,
                     "logprobs": None} for i, r in enumerate(results)]})
