"""Tool calls in generated text, for models whose template has no native tool format.

afinar teaches such models the Hermes convention (``<tool_call>{"name": ..., "arguments":
{...}}</tool_call>``, see ``templates.prepare_messages``); this module reads it back into
OpenAI's ``tool_calls``. Small models forget the closing tag or answer with a bare JSON object;
both are accepted. Shared by the chat endpoint and the tool loop.
"""

from __future__ import annotations

import json
import re
from typing import Any

from afinar.ids import new_id

_OPEN = re.compile(r"<tool_call>\s*")
_CLOSE = re.compile(r"\s*</tool_call>")


def _as_call(obj: Any, names: set[str] | None) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or (
            names is not None and obj["name"] not in names):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    return {"id": new_id("call_"), "type": "function", "function": {
        "name": obj["name"],
        "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)}}


def parse_tool_calls(text: str, names: set[str] | None = None
                     ) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, OpenAI ``tool_calls``). With calls, content is the remaining text without them
    (``None`` if nothing remains); without calls, ``(text, [])``. ``names`` limits the tools
    that may be called."""
    dec = json.JSONDecoder()
    calls, spans = [], []
    for m in _OPEN.finditer(text):
        try:
            obj, end = dec.raw_decode(text, m.end())
        except ValueError:
            continue
        close = _CLOSE.match(text, end)
        if call := _as_call(obj, names):
            calls.append(call)
            spans.append((m.start(), close.end() if close else end))
    if not calls:
        try:
            call = _as_call(json.loads(text.strip()), names)
        except ValueError:
            call = None
        return (None, [call]) if call else (text, [])
    for a, b in reversed(spans):
        text = text[:a] + text[b:]
    return text.strip() or None, calls


FORCED_PREFIX = "<tool_call>\n"  # a forced call starts the reply; the JSON after it is constrained


def forced_call_schema(tools: list[dict[str, Any]], name: str | None = None) -> dict[str, Any]:
    """The JSON schema of one call, ``{"name": ..., "arguments": {...}}``, of the function
    ``name`` (a named ``tool_choice``) or of any of ``tools`` (``"required"``), with each
    function's ``parameters`` as the arguments' schema. Under constrained decoding
    (``SamplingParams.json_schema``) after ``FORCED_PREFIX`` the reply is that call and
    ``parse_tool_calls`` reads it back. Arguments hold only the declared properties unless
the schema says ``additionalProperties`` itself. Unless every function is ``strict``, keywords that
    cannot be enforced are ignored (llguidance's ``lenient``), as in JSON mode."""
    options, defs, strict = [], {}, True
    for t in tools:
        fn = t.get("function", t)
        if name is not None and fn.get("name") != name:
            continue
        params = dict(fn.get("parameters") or {"type": "object"})
        if params.get("properties") and "additionalProperties" not in params:
            # only the declared arguments: JSON Schema's default (extra keys allowed) let a
            # sampled call run on with keys nobody declared until max_tokens cut it
            params["additionalProperties"] = False
        defs.update(params.pop("$defs", None) or {})
        params.pop("x-guidance", None)
        strict = strict and bool(fn.get("strict"))
        options.append({"type": "object", "additionalProperties": False,
                        "required": ["name", "arguments"],
                        "properties": {"name": {"const": fn.get("name")}, "arguments": params}})
    if not options:
        raise ValueError(f"no function named {name!r}")
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    if defs:
        schema = {**schema, "$defs": defs}
    return schema if strict else {**schema, "x-guidance": {"lenient": True}}
