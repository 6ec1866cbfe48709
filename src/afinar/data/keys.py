"""What duplicate detection compares: an example's text, its exact key and its normalized text.

Duplicates come in three strengths, and validation, splits and leak checks all use these keys:

- exact: the same JSON value, ignoring key order, whitespace and ``weight`` keys (``exact_key``);
- normalized: the same text once casefolded, stripped of punctuation and with whitespace collapsed
  (``normalize(example_text(...))``), so "Hello,  World!" matches "hello world";
- near: a Jaccard similarity of word shingles at or above a threshold (``afinar.data.minhash``).

Message contents are read with the one ``content_text`` the chat templates use (text parts joined
as the model sees them); any other JSON value counts as its canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

from afinar.data.formats import content_text


def field_text(value: Any) -> str:
    """A field as text: a message content (string or parts) as the templates read it, any other
    JSON value as its canonical JSON."""
    if value is None or isinstance(value, str | list):
        return content_text(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _message_parts(msg: Any, role: str | None = None) -> list[tuple[str, str]]:
    if not isinstance(msg, dict):
        return [(role or "", field_text(msg))]
    role = role or str(msg.get("role", ""))
    parts = [(role, field_text(msg.get("content")))] if msg.get("content") is not None else []
    calls = list(msg.get("tool_calls") or []) + ([msg["function_call"]] if msg.get("function_call")
                                                 else [])
    for call in calls:
        fn = (call.get("function") or call) if isinstance(call, dict) else {}
        args = fn.get("arguments", "")
        args = args if isinstance(args, str) else json.dumps(args, sort_keys=True)
        parts.append((role, f"{fn.get('name', '')}({args})"))
    return parts


def _parts(data: Any) -> list[tuple[str, str]]:
    """(role, text) pieces of an example, in order, for every dataset format."""
    if not isinstance(data, dict):
        return [("", json.dumps(data, sort_keys=True, ensure_ascii=False))]
    if isinstance(data.get("messages"), list):
        out = [p for m in data["messages"] for p in _message_parts(m)]
        if "completion" in data:  # an unpaired (KTO) row: its answer follows the messages
            out.append(("assistant", field_text(data["completion"])))
        return out
    if "preferred_output" in data or "non_preferred_output" in data:
        inp = data.get("input")
        msgs = inp.get("messages") if isinstance(inp, dict) else inp
        out = [p for m in (msgs if isinstance(msgs, list) else [msgs]) for p in _message_parts(m)]
        for key in ("preferred_output", "non_preferred_output"):
            val = data.get(key)
            for m in val if isinstance(val, list) else [val]:
                out += _message_parts(m, role=key)
        return out
    if "prompt" in data or "completion" in data:
        return [("user", field_text(data.get("prompt"))),
                ("assistant", field_text(data.get("completion")))]
    if "text" in data:
        return [("", field_text(data["text"]))]
    return [(str(k), field_text(v)) for k, v in data.items()]


def example_text(data: Any) -> str:
    """The text of an example for duplicate detection: ``role: content`` lines in message order
    (prompt/completion as user/assistant, preference outputs after the input), tool calls as
    ``name(arguments)``."""
    return "\n".join(f"{role}: {text}" if role else text for role, text in _parts(data))


def _without_weights(data: Any) -> Any:
    """``data`` with ``weight`` removed from its messages (and nowhere else: a tool schema may have
    a parameter called weight)."""
    if not isinstance(data, dict):
        return data

    def msgs(v: Any) -> Any:
        return [{k: x for k, x in m.items() if k != "weight"} if isinstance(m, dict) else m
                for m in v] if isinstance(v, list) else v

    out = {k: msgs(v) if k in ("messages", "preferred_output", "non_preferred_output") else v
           for k, v in data.items()}
    if isinstance(out.get("input"), dict):
        out["input"] = {k: msgs(v) if k == "messages" else v for k, v in out["input"].items()}
    return out


def exact_key(data: Any) -> str:
    """sha256 of the example's canonical JSON: key order, whitespace and weights do not count."""
    canon = json.dumps(_without_weights(data), sort_keys=True, ensure_ascii=False,
                       separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


class _Unpunct(dict):
    """A ``str.translate`` table that deletes Unicode punctuation (categories P*), filled lazily."""

    def __missing__(self, cp: int) -> int | None:
        self[cp] = None if unicodedata.category(chr(cp)).startswith("P") else cp
        return self[cp]


_UNPUNCT = _Unpunct()


def normalize(text: str) -> str:
    """Casefold, NFKC, punctuation removed, whitespace collapsed: ``"Hello,  World!"`` becomes
    ``"hello world"``."""
    text = text.casefold()
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.translate(_UNPUNCT).split())


def group_key(data: Any, text: str) -> tuple[str, str]:
    """Equal for exact and normalized duplicates (an example with no words falls back to exact)."""
    norm = normalize(text)
    return ("n", norm) if norm else ("e", exact_key(data))


def preview(data: Any, limit: int = 80) -> str:
    """The example on one line for reports: its non-system text, cut at ``limit`` characters."""
    text = " | ".join(t for role, t in _parts(data) if role != "system" and t.strip())
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

