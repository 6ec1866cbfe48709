"""Converters to the chat format: CSV rows through a column mapping, and evals-style rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from afinar.data.formats import evals_row_to_chat
from afinar.data.issues import Issue
from afinar.data.reader import iter_rows
from afinar.errors import InvalidRequest
from afinar.store.atomic import atomic_open


@dataclass
class ConvertSummary:
    written: int = 0
    skipped: list[Issue] = field(default_factory=list)
    out: str = ""


def _row_to_chat(data: dict, line: int, system: str | None, user_col: str | None,
                 assistant_col: str | None) -> dict:
    if "input" in data and "ideal" in data:
        chat = evals_row_to_chat(data)
        if system and not any(m.get("role") == "system" for m in chat["messages"]):
            chat["messages"].insert(0, {"role": "system", "content": system})
        return chat
    if "messages" in data:
        return data
    if not user_col or not assistant_col:
        raise ValueError("give --user-col and --assistant-col to map columns to messages")
    for col in (user_col, assistant_col):
        if col not in data:
            raise ValueError(f"no column {col!r} (columns: {', '.join(map(str, data))})")
        if not str(data[col] or "").strip():
            raise ValueError(f"column {col!r} is empty")
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": "user", "content": str(data[user_col])},
             {"role": "assistant", "content": str(data[assistant_col])}]
    return {"messages": msgs}


def convert_to_chat(src: str | Path, dst: str | Path, *, system: str | None = None,
                    user_col: str | None = None, assistant_col: str | None = None
                    ) -> ConvertSummary:
    """Write ``dst`` (JSONL, atomically): one chat example per convertible row of ``src``."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise InvalidRequest("the output must not be the input file", param="out")
    summary = ConvertSummary(out=str(dst))
    checked = False
    with atomic_open(dst, "w") as f:  # nothing is written unless the block ends cleanly
        for item in iter_rows(src):
            if isinstance(item, Issue):
                summary.skipped.append(item)
                continue
            if not isinstance(item.data, dict):
                summary.skipped.append(Issue("data_type", "not an object", item.line))
                continue
            if not checked and not {"messages", "input"} & set(item.data):
                _check_columns(src, item, user_col, assistant_col)
                checked = True
            try:
                chat = _row_to_chat(item.data, item.line, system, user_col, assistant_col)
            except ValueError as e:
                summary.skipped.append(Issue("invalid_field", str(e), item.line))
                continue
            f.write(json.dumps(chat, ensure_ascii=False) + "\n")
            summary.written += 1
        if not summary.written:
            why = "; ".join(str(i) for i in summary.skipped[:3]) or "it has no rows"
            raise InvalidRequest(f"no row of {src.name} could be converted ({why}); nothing "
                                 "was written", param="file")
    return summary


def _check_columns(src: Path, row, user_col: str | None, assistant_col: str | None) -> None:
    """A column mapping that names a column the file does not have is refused before anything
    is written (once, naming the columns there are, rather than once per row)."""
    columns = ", ".join(map(str, row.data)) or "none"
    if not user_col or not assistant_col:
        raise InvalidRequest(f"{src.name} is not chat or evals rows: give --user-col and "
                             f"--assistant-col to map its columns ({columns})",
                             param="user_col" if not user_col else "assistant_col")
    for param, col in (("user_col", user_col), ("assistant_col", assistant_col)):
        if col not in row.data:
            raise InvalidRequest(f"{src.name} has no column {col!r} (line {row.line}); its "
                                 f"columns: {columns}", param=param)
