"""Tools (active RAG): live functions the model may call while answering.

Two kinds, one registry: HTTP JSON tools declared in YAML (name, description, JSON-schema
parameters, URL template, method, headers taken from environment variables, timeout) and Python
functions. ``answer_with_tools`` lets the model call them: the chat template's own tool-call format
where it has one, otherwise the Hermes ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
convention that ``afinar.models.templates.prepare_messages`` teaches it. Arguments are validated
against the tool's schema before anything runs; calls per answer are limited; every call is logged.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import string
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afinar.errors import InvalidRequest
from afinar.models.toolcalls import parse_tool_calls

log = logging.getLogger("afinar.tools")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any]], Any]

    def spec(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name,
                                                 "description": self.description,
                                                 "parameters": self.parameters}}


def http_tool(spec: dict[str, Any]) -> Tool:
    """A tool that calls an HTTP JSON endpoint. ``url`` may hold ``{param}`` placeholders;
    remaining arguments go in the query (GET) or the JSON body (POST); header values may name
    environment variables as ``${NAME}`` (secrets stay out of the YAML)."""
    import httpx

    for key in ("name", "url"):
        if not spec.get(key):
            raise InvalidRequest(f"a tool needs {key!r}", param="tools")
    method = spec.get("method", "GET").upper()
    timeout = float(spec.get("timeout", 10))
    headers_tpl = dict(spec.get("headers") or {})

    def run(args: dict[str, Any]) -> Any:
        used = {k for _, k, _, _ in string.Formatter().parse(spec["url"]) if k}
        url = spec["url"].format(**{k: urllib.parse.quote(str(args[k]), safe="") for k in used})
        rest = {k: v for k, v in args.items() if k not in used}
        headers = {k: _ENV.sub(lambda m: os.environ.get(m.group(1), ""), str(v))
                   for k, v in headers_tpl.items()}
        r = httpx.request(method, url, params=rest if method == "GET" else None,
                          json=rest if method != "GET" else None, headers=headers,
                          timeout=timeout)
        r.raise_for_status()
        return r.json()

    return Tool(spec["name"], spec.get("description", ""),
                spec.get("parameters") or {"type": "object", "properties": {}}, run)


_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
          dict: "object"}


def python_tool(fn: Callable | None = None, *, name: str | None = None):
    """Wrap a Python function as a tool; its signature becomes the JSON schema."""

    def wrap(f: Callable) -> Tool:
        sig = inspect.signature(f)
        props, required = {}, []
        for p in sig.parameters.values():
            props[p.name] = {"type": _TYPES.get(p.annotation, "string")}
            if p.default is inspect.Parameter.empty:
                required.append(p.name)
        return Tool(name or f.__name__, (inspect.getdoc(f) or "").split("\n")[0],
                    {"type": "object", "properties": props, "required": required},
                    lambda args: f(**args))

    return wrap(fn) if fn is not None else wrap


class ToolRegistry:
    def __init__(self, tools: list[Tool] | None = None):
        self.tools: dict[str, Tool] = {t.name: t for t in tools or []}

    def add(self, tool: Tool) -> None:
        self.tools[tool.name] = tool

    @classmethod
    def from_yaml(cls, path: str | Path) -> ToolRegistry:
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        items = data.get("tools", data) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise InvalidRequest(f"{path}: expected a list of tools", param="tools")
        return cls([http_tool(t) for t in items])

    def specs(self) -> list[dict[str, Any]]:
        return [t.spec() for t in self.tools.values()]


@dataclass
class ToolCallLog:
    name: str
    arguments: dict[str, Any]
    ok: bool
    seconds: float
    result: str


@dataclass
class ToolAnswer:
    text: str
    calls: list[ToolCallLog] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)


def call_tool(registry: ToolRegistry, call: dict[str, Any]) -> ToolCallLog:
    import jsonschema

    fn = call["function"]
    t0 = time.perf_counter()
    tool = registry.tools.get(fn["name"])
    try:
        args = json.loads(fn.get("arguments") or "{}")
        if tool is None:
            raise ValueError(f"no tool named {fn['name']!r}")
        jsonschema.validate(args, tool.parameters)
        result, ok = json.dumps(tool.run(args), ensure_ascii=False, default=str), True
    except Exception as e:  # noqa: BLE001 - the model sees the error and may recover
        args = args if "args" in locals() and isinstance(args, dict) else {}
        result, ok = json.dumps({"error": f"{type(e).__name__}: {e}"}), False
    entry = ToolCallLog(fn["name"], args, ok, time.perf_counter() - t0, result[:4000])
    log.info("tool %s %s -> %s in %.2fs", entry.name, json.dumps(args), "ok" if ok else "error",
             entry.seconds)
    return entry


FORCED_CALL = '<tool_call>\n{"name": "'


def constrained_call(generate: Callable[..., str], messages: list[dict], registry: ToolRegistry
                     ) -> dict[str, Any] | None:
    """A tool call whose JSON shape is fixed by afinar and whose values the model writes: the
    tool's name is chosen among the registered ones, then each required parameter of a
    primitive type is generated alone, up to its closing quote or separator. Small models that
    copy the schema or break JSON when left free still produce a valid, schema-shaped call."""
    import difflib

    specs = registry.specs()
    names = list(registry.tools)
    if len(names) == 1:
        name = names[0]
    else:
        said = generate(messages, specs, FORCED_CALL, stop=['"'], max_tokens=16).strip()
        close = difflib.get_close_matches(said, names, n=1, cutoff=0.0)
        name = close[0] if close else names[0]
    schema = registry.tools[name].parameters or {}
    props = schema.get("properties") or {}
    prefix = FORCED_CALL + name + '", "arguments": {'
    args: dict[str, Any] = {}
    for key in schema.get("required", list(props)):
        kind = (props.get(key) or {}).get("type", "string")
        if args:
            prefix += ", "
        if kind == "string":
            prefix += f'"{key}": "'
            value = generate(messages, specs, prefix, stop=['"'], max_tokens=32)
            args[key] = value
            prefix += json.dumps(value)[1:]
        elif kind in ("number", "integer", "boolean"):
            prefix += f'"{key}": '
            raw = generate(messages, specs, prefix, stop=[",", "}"], max_tokens=12).strip()
            try:
                value = json.loads(raw)
            except ValueError:
                return None
            args[key] = value
            prefix += json.dumps(value)
        else:
            return None  # objects and arrays: leave them to the model's own format
    from afinar.ids import new_id

    return {"id": new_id("call_"), "type": "function",
            "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}


def answer_with_tools(generate: Callable[..., str], messages: list[dict[str, Any]],
                      registry: ToolRegistry, max_calls: int = 3,
                      tool_choice: str = "auto") -> ToolAnswer:
    """Let the model call tools until it answers.

    ``generate(messages, tools, prefix, stop=None, max_tokens=None)`` returns the model's
    continuation of ``prefix``. ``tool_choice="required"`` makes the first turn a tool call in a
    constrained format (``constrained_call``), for small models that rarely decide to call on
    their own; ``"auto"`` leaves the choice to the model.
    """
    msgs = [dict(m) for m in messages]
    out = ToolAnswer("", [], msgs)
    while True:
        allow = len(out.calls) < max_calls
        if allow and tool_choice == "required" and not out.calls:
            call = constrained_call(generate, msgs, registry)
            content, calls = None, [call] if call else []
        else:
            text = generate(msgs, registry.specs() if allow else None, "")
            content, calls = (parse_tool_calls(text, set(registry.tools)) if allow
                              else (text, []))
        if not calls:
            out.text = content or ""
            return out
        calls = calls[: max_calls - len(out.calls)]
        msgs.append({"role": "assistant", "content": content or None, "tool_calls": calls})
        for c in calls:
            entry = call_tool(registry, c)
            out.calls.append(entry)
            msgs.append({"role": "tool", "tool_call_id": c["id"], "content": entry.result})


def model_generate(generator) -> Callable[..., str]:
    """``generate`` for ``answer_with_tools`` backed by an ``afinar.models.Generator``."""
    from afinar.models.generation import SamplingParams

    def generate(messages, tools, prefix, stop=None, max_tokens=None):
        params = SamplingParams(temperature=0, max_tokens=max_tokens or 256, stop=stop or [],
                                frequency_penalty=0.3)
        return generator.chat(messages, params, tools=tools, prefix=prefix).text

    return generate
