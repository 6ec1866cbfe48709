"""Dataset formats: detect each example's format, check its shape, normalise it to ``Example``.

Formats: ``chat`` (OpenAI chat fine-tuning: messages, tools, weights, tool calls), ``completion``
(prompt/completion), ``preference`` (DPO: input + preferred/non-preferred output, also the
``*_completion`` spelling), ``text`` (continued pretraining) and ``evals`` rows
(``{"input": [messages], "ideal": ...}``), which become chat by appending the ideal answer, and
``prompt`` (reinforcement fine-tuning: ``messages`` ending with a user turn, no answer; the row's
other keys are the grader's ``item``), which only a caller expecting it asks for.
Unpaired rows (``unpaired``, KTO) hold ``messages`` before the answer, the answer as
``completion`` and a boolean ``label`` (true: a desirable answer), as ``afinar feedback export
--as kto`` writes them.
Unlike the OpenAI cookbook checker, valid tool calls, tool messages and text content parts pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from afinar.data.issues import Issue
from afinar.models.templates import content_text  # noqa: F401  (re-exported)

ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id",
                "function_call", "refusal"}
FORMATS = ("chat", "completion", "preference", "unpaired", "text", "prompt")


@dataclass
class Example:
    format: str  # chat | completion | preference | text | prompt
    line: int
    messages: list[dict[str, Any]] = field(default_factory=list)  # chat; preference input
    tools: list[dict[str, Any]] | None = None
    chosen: dict[str, Any] | None = None  # preference
    rejected: dict[str, Any] | None = None
    prompt: str = ""  # completion
    completion: str = ""
    text: str = ""  # text
    label: bool | None = None  # unpaired: a desirable answer (True) or not
    item: dict[str, Any] | None = None  # prompt: the row without messages/tools (the grader's)

    def canonical(self) -> str:
        """A stable string for duplicate detection (weights excluded)."""
        strip = [{k: v for k, v in m.items() if k != "weight"} for m in self.messages]
        return json.dumps([self.format, strip, self.tools, self.chosen, self.rejected,
                           self.prompt, self.completion, self.text]
                          + ([self.label] if self.label is not None else [])
                          + ([self.item] if self.item is not None else []),
                          sort_keys=True, ensure_ascii=False)


def detect(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    if "messages" in obj:
        return "unpaired" if "completion" in obj else "chat"
    if "input" in obj and any(k in obj for k in ("preferred_output", "preferred_completion",
                                                 "non_preferred_output")):
        return "preference"
    if "input" in obj and "ideal" in obj:
        return "evals"
    if "prompt" in obj or "completion" in obj:
        return "completion"
    if "text" in obj:
        return "text"
    return None


class _Checker:
    def __init__(self, line: int):
        self.line = line
        self.issues: list[Issue] = []

    def err(self, code: str, msg: str, fld: str | None = None) -> None:
        self.issues.append(Issue(code, msg, self.line, fld))

    def warn(self, code: str, msg: str, fld: str | None = None) -> None:
        self.issues.append(Issue(code, msg, self.line, fld, "warning"))

    def content(self, m: dict, f: str, required: bool) -> None:
        c = m.get("content")
        if isinstance(c, list):
            for j, part in enumerate(c):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    continue
                if kind in ("image_url", "input_audio", "file", "input_image"):
                    self.err("unsupported_content", f"{kind} parts cannot be trained on by "
                             "text models", f"{f}.content[{j}]")
                else:
                    self.err("missing_content", "a content part must be "
                             '{"type": "text", "text": "..."}', f"{f}.content[{j}]")
            if required and not content_text(c).strip():
                self.err("missing_content", "content has no text", f"{f}.content")
        elif c is not None and not isinstance(c, str):
            self.err("missing_content", f"content must be a string, not {type(c).__name__}",
                     f"{f}.content")
        elif required and not (c or "").strip():
            self.err("missing_content", "content is empty", f"{f}.content")

    def tool_calls(self, calls: Any, f: str, ids: set[str]) -> None:
        if not isinstance(calls, list) or not calls:
            self.err("invalid_tool_call", "tool_calls must be a non-empty list", f)
            return
        for j, c in enumerate(calls):
            g = f"{f}[{j}]"
            fn = c.get("function") if isinstance(c, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                self.err("invalid_tool_call", "a tool call needs function.name", g)
                continue
            args = fn.get("arguments")
            if isinstance(args, str):
                try:
                    json.loads(args)
                except ValueError:
                    self.err("invalid_tool_call", "function.arguments is not valid JSON",
                             f"{g}.function.arguments")
            elif not isinstance(args, dict):
                self.err("invalid_tool_call", "function.arguments must be a JSON string",
                         f"{g}.function.arguments")
            if isinstance(c.get("id"), str):
                ids.add(c["id"])

    def messages(self, msgs: Any, f: str, need_assistant: bool) -> list[dict]:
        if not isinstance(msgs, list) or not msgs:
            self.err("missing_messages_list", "needs a non-empty messages list", f)
            return []
        call_ids: set[str] = set()
        for i, m in enumerate(msgs):
            g = f"{f}[{i}]"
            if not isinstance(m, dict):
                self.err("data_type", "a message must be a JSON object", g)
                continue
            for k in m:
                if k not in MESSAGE_KEYS:
                    self.err("message_unrecognized_key", f"unrecognized key {k!r}", f"{g}.{k}")
            role = m.get("role")
            if role is None:
                self.err("message_missing_key", "message has no 'role'", f"{g}.role")
                continue
            if role not in ROLES:
                self.err("unrecognized_role", f"role {role!r} is not one of {', '.join(ROLES)}",
                         f"{g}.role")
                continue
            has_calls = role == "assistant" and m.get("tool_calls") is not None
            if "content" not in m and not has_calls:
                self.err("message_missing_key", "message has no 'content'", f"{g}.content")
            else:
                self.content(m, g, required=not has_calls and role != "tool")
            if has_calls:
                self.tool_calls(m["tool_calls"], f"{g}.tool_calls", call_ids)
            if role == "tool":
                tid = m.get("tool_call_id")
                if not isinstance(tid, str):
                    self.err("message_missing_key", "a tool message needs 'tool_call_id'",
                             f"{g}.tool_call_id")
                elif tid not in call_ids:
                    self.err("unmatched_tool_call_id", f"tool_call_id {tid!r} matches no earlier "
                             "assistant tool call", f"{g}.tool_call_id")
            if "weight" in m:
                w = m["weight"]
                if isinstance(w, bool) or w not in (0, 1):
                    self.err("invalid_weight", f"weight must be 0 or 1, not {w!r}", f"{g}.weight")
                elif role != "assistant":
                    self.warn("invalid_weight", "weight only applies to assistant messages; "
                              "ignored", f"{g}.weight")
        assistants = [m for m in msgs if isinstance(m, dict) and m.get("role") == "assistant"]
        if need_assistant and not assistants:
            self.err("example_missing_assistant_message", "no assistant message to learn from", f)
        elif need_assistant and all(m.get("weight", 1) == 0 for m in assistants):
            self.err("no_trained_tokens", "every assistant message has weight 0", f)
        return msgs

    def tools(self, tools: Any) -> list | None:
        if tools is None:
            return None
        if not isinstance(tools, list):
            self.err("invalid_tools", "tools must be a list", "tools")
            return None
        for j, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                self.err("invalid_tools", 'a tool must be {"type": "function", "function": '
                         '{"name": ..., "parameters": {...}}}', f"tools[{j}]")
            elif "parameters" in fn and not isinstance(fn["parameters"], dict):
                self.err("invalid_tools", "function.parameters must be a JSON schema object",
                         f"tools[{j}].function.parameters")
        return tools

    def string(self, obj: dict, key: str) -> str:
        v = obj.get(key)
        if not isinstance(v, str) or not v.strip():
            self.err("invalid_field", f"{key!r} must be a non-empty string", key)
            return ""
        return v

    def output(self, obj: dict, key: str, alias: str) -> dict | None:
        k = key if key in obj else alias
        v = obj.get(k)
        if isinstance(v, list) and len(v) == 1 and isinstance(v[0], dict):
            v = v[0]
        if not isinstance(v, dict) or v.get("role", "assistant") != "assistant":
            self.err("invalid_field", f"{key!r} must be a list holding one assistant message", k)
            return None
        self.content(v, k, required=True)
        return {"role": "assistant", "content": content_text(v.get("content"))}


def parse_example(obj: Any, line: int, expected: str | None = None) -> tuple[Example | None,
                                                                              list[Issue]]:
    """Check one row; return the normalised example (None when it has errors) and its issues."""
    ck = _Checker(line)
    fmt = detect(obj)
    if not isinstance(obj, dict):
        ck.err("data_type", f"an example must be a JSON object, not {type(obj).__name__}")
        return None, ck.issues
    if fmt == "evals":
        fmt, obj = "chat", _evals_to_chat(obj, ck)
        if obj is None:
            return None, ck.issues
    if fmt is None:
        if expected == "chat" or expected is None:
            ck.err("missing_messages_list", "no 'messages' list (nor prompt/completion, "
                   "preference or text fields)", "messages")
        else:
            ck.err("unknown_format", f"expected a {expected} example")
        return None, ck.issues
    if expected == "prompt" and fmt == "chat":  # an RFT row is a chat row without the answer
        fmt = "prompt"
    if expected == "unpaired" and fmt == "chat":  # an unpaired row that lost its completion
        fmt = "unpaired"
    if expected is not None and fmt != expected:
        ck.err("inconsistent_format", f"a {fmt} example in a {expected} file")
        return None, ck.issues
    ex = Example(fmt, line)
    if fmt == "chat":
        ex.messages = ck.messages(obj.get("messages"), "messages", need_assistant=True)
        ex.tools = ck.tools(obj.get("tools"))
        if "parallel_tool_calls" in obj and not isinstance(obj["parallel_tool_calls"], bool):
            ck.err("invalid_field", "parallel_tool_calls must be true or false",
                   "parallel_tool_calls")
    elif fmt == "prompt":
        ex.messages = ck.messages(obj.get("messages"), "messages", need_assistant=False)
        ex.tools = ck.tools(obj.get("tools"))
        last = ex.messages[-1] if ex.messages else None
        if isinstance(last, dict) and last.get("role") != "user":
            ck.err("invalid_field", "a reinforcement prompt must end with a user message (the "
                   "model writes the answer)", f"messages[{len(ex.messages) - 1}].role")
        ex.item = {k: v for k, v in obj.items() if k not in ("messages", "tools")}
    elif fmt == "unpaired":
        ex.messages = ck.messages(obj.get("messages"), "messages", need_assistant=False)
        ex.tools = ck.tools(obj.get("tools"))
        ex.completion = ck.string(obj, "completion")
        label = obj.get("label")
        if "label" not in obj:
            ck.err("invalid_field", "no 'label' (true: a desirable answer, false: an "
                   "undesirable one)", "label")
        elif not isinstance(label, bool):
            ck.err("invalid_field", f"'label' must be true or false, not {label!r}", "label")
        else:
            ex.label = label
    elif fmt == "preference":
        inp = obj.get("input")
        inp = inp if isinstance(inp, dict) else {}
        ex.messages = ck.messages(inp.get("messages"), "input.messages", need_assistant=False)
        ex.tools = ck.tools(inp.get("tools"))
        ex.chosen = ck.output(obj, "preferred_output", "preferred_completion")
        ex.rejected = ck.output(obj, "non_preferred_output", "non_preferred_completion")
        if ex.chosen and ex.rejected and ex.chosen["content"] == ex.rejected["content"]:
            ck.err("invalid_field", "preferred and non-preferred outputs are identical",
                   "non_preferred_output")
    elif fmt == "completion":
        ex.prompt = ck.string(obj, "prompt")
        ex.completion = ck.string(obj, "completion")
    else:
        ex.text = ck.string(obj, "text")
    has_errors = any(i.severity == "error" for i in ck.issues)
    return (None if has_errors else ex), ck.issues


def _evals_to_chat(obj: dict, ck: _Checker) -> dict | None:
    """``{"input": [messages], "ideal": "..."}`` -> chat with the ideal answer appended."""
    ideal = obj.get("ideal")
    if isinstance(ideal, list):
        ideal = ideal[0] if ideal else None
    if not isinstance(ideal, str) or not ideal.strip():
        ck.err("invalid_field", "'ideal' must be a non-empty string", "ideal")
        return None
    inp = obj.get("input")
    if isinstance(inp, str):
        inp = [{"role": "user", "content": inp}]
    if not isinstance(inp, list):
        ck.err("missing_messages_list", "'input' must be a list of messages", "input")
        return None
    return {"messages": [*inp, {"role": "assistant", "content": ideal}]}


def evals_row_to_chat(obj: dict) -> dict:
    """Public converter used by ``afinar data convert``; raises ValueError on a bad row."""
    ck = _Checker(0)
    out = _evals_to_chat(obj, ck)
    if out is None:
        raise ValueError("; ".join(i.message for i in ck.issues))
    return out
