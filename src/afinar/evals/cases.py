"""Test cases: the user's held-out chat JSONL, one conversation per line, the last assistant
message being the reference answer. An optional ``metadata`` object per line feeds metrics that
need more than the reference: ``gold_sources`` (file names a retriever should find),
``must_contain`` (strings a right answer holds) and ``labels``-style fields.

Rows are checked here with the line and field named, the same way the dataset validator reports:
an evaluation on a broken test file would measure the broken file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afinar.errors import InvalidRequest
from afinar.models.templates import content_text


@dataclass
class Case:
    id: str  # "line-N": stable across runs of the same file
    line: int
    messages: list[dict[str, Any]]  # the prompt: every message before the reference
    reference: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        """The last user message: what retrieval and few-shot selection search with."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return content_text(m.get("content"))
        return ""


def _bad(path: Path, line: int, fld: str, msg: str) -> InvalidRequest:
    return InvalidRequest(f"{path}:{line}: {fld}: {msg}", param=fld)


def read_cases(path: str | Path, limit: int | None = None) -> list[Case]:
    path = Path(path)
    if not path.is_file():
        raise InvalidRequest(f"test file not found: {path}", param="test_file")
    cases: list[Case] = []
    with path.open(encoding="utf-8-sig") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as e:
                raise _bad(path, n, "line", f"not JSON ({e.msg} at column {e.colno})") from None
            cases.append(_case(path, n, row))
            if limit is not None and len(cases) >= limit:
                break
    if not cases:
        raise InvalidRequest(f"{path}: no test conversations", param="test_file")
    return cases


def _case(path: Path, n: int, row: Any) -> Case:
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
        raise _bad(path, n, "messages", "each line needs a messages list")
    msgs = row["messages"]
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user",
                                                             "assistant", "tool"):
            raise _bad(path, n, f"messages[{i}].role",
                       "must be system, developer, user, assistant or tool")
    if not msgs or msgs[-1].get("role") != "assistant":
        raise _bad(path, n, "messages", "the last message must be the assistant's reference "
                                        "answer")
    reference = content_text(msgs[-1].get("content"))
    if not reference.strip():
        raise _bad(path, n, f"messages[{len(msgs) - 1}].content", "the reference answer is empty")
    if not any(m.get("role") == "user" for m in msgs[:-1]):
        raise _bad(path, n, "messages", "no user message before the reference")
    meta = row.get("metadata") or {}
    if not isinstance(meta, dict):
        raise _bad(path, n, "metadata", "must be an object")
    for key in ("gold_sources", "must_contain"):
        v = meta.get(key)
        if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise _bad(path, n, f"metadata.{key}", "must be a list of strings")
    prompt = [{k: v for k, v in m.items() if k != "weight"} for m in msgs[:-1]]
    return Case(f"line-{n}", n, prompt, reference, meta)


def read_shots(path: str | Path) -> list[tuple[str, str]]:
    """(user, assistant) pairs from a training file, the few-shot pool: the last user turn and
    the assistant answer after it, one pair per conversation."""
    pairs = []
    for c in read_cases(path):
        if c.question:
            pairs.append((c.question, c.reference))
    return pairs
