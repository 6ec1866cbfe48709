"""Read dataset files as a stream of (line number, JSON value) rows, in bounded memory.

JSONL is read line by line from bytes so that each problem is reported where it is: a UTF-8 BOM
and CRLF endings are accepted, a NUL byte means a binary file (reading stops), a line that is not
UTF-8 or not JSON is reported with its number, a line longer than ``max_line_bytes`` is skipped
without being held in memory, and an unparsable last line without a newline is called out as a
probable truncation. ``.json`` (an array), ``.csv`` (rows as objects) and raw text
(``.txt``/``.md``: the whole file is one ``{"text": ...}`` document) are read too.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afinar.data.issues import Issue

MAX_LINE_BYTES = 64 << 20  # 64 MiB: a 10 MB single example is fine, a runaway line is not
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")


@dataclass
class Row:
    line: int  # 1-based line (JSONL, CSV) or item number (JSON array)
    data: Any
    raw: bytes | None = None  # the line as stored (JSONL), for exact duplicate detection


def _read_line(f: io.BufferedReader, limit: int) -> tuple[bytes, bool]:
    """One line (without its newline); the flag says it was longer than ``limit`` (then the
    content is dropped and the rest of the line skipped in chunks)."""
    line = f.readline(limit + 1)
    if len(line) <= limit or line.endswith(b"\n"):
        return line, False
    while line and not line.endswith(b"\n"):
        line = f.readline(1 << 20)
    return b"", True


def iter_jsonl(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Row | Issue]:
    size = path.stat().st_size
    if size == 0:
        yield Issue("empty_file", f"{path.name} is empty", None)
        return
    n_rows = 0
    with open(path, "rb") as f:
        lineno = 0
        while True:
            line, too_long = _read_line(f, max_line_bytes)
            if not line and not too_long:
                break
            lineno += 1
            if too_long:
                yield Issue("line_too_long", f"line is over {max_line_bytes} bytes; skipped", lineno)
                continue
            ended = line.endswith(b"\n")
            if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            body = line.rstrip(b"\r\n")
            if b"\x00" in body:
                yield Issue("binary_file", f"{path.name} is not a text file (NUL byte on line "
                            f"{lineno}); stopped reading", lineno)
                return
            if not body.strip():
                continue
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Issue("invalid_utf8", f"not valid UTF-8 at byte {e.start} of the line", lineno)
                continue
            try:
                data = json.loads(text)
            except ValueError as e:
                hint = ("; the file may be truncated (its last line has no newline)"
                        if not ended and f.peek(1) == b"" else "")
                yield Issue("invalid_json", f"not valid JSON: {e.msg} at column {e.colno}{hint}",
                            lineno)
                continue
            n_rows += 1
            yield Row(lineno, data, body)
    if n_rows == 0:
        yield Issue("empty_file", f"{path.name} has no JSON lines", None)


def iter_json_array(path: Path) -> Iterator[Row | Issue]:
    # A JSON array must be parsed whole (no streaming parser in the stdlib); JSONL is the
    # bounded-memory format for large datasets.
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        yield Issue("invalid_utf8", f"not valid UTF-8 at byte {e.start}", None)
        return
    except ValueError as e:
        yield Issue("invalid_json", f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                    getattr(e, "lineno", None))
        return
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        yield Issue("data_type", "a .json dataset must be an array of examples", None)
        return
    if not data:
        yield Issue("empty_file", f"{path.name} is an empty array", None)
    for i, item in enumerate(data, 1):
        yield Row(i, item)


def iter_csv(path: Path) -> Iterator[Row | Issue]:
    with open(path, newline="", encoding="utf-8-sig", errors="strict") as f:
        try:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                yield Issue("empty_file", f"{path.name} has no header row", None)
                return
            n = 0
            for rec in reader:
                n += 1
                yield Row(reader.line_num, dict(rec))
            if n == 0:
                yield Issue("empty_file", f"{path.name} has a header but no rows", None)
        except UnicodeDecodeError as e:
            yield Issue("invalid_utf8", f"not valid UTF-8 at byte {e.start}", None)
        except csv.Error as e:
            yield Issue("invalid_csv", str(e), reader.line_num if "reader" in locals() else None)


def iter_text(path: Path) -> Iterator[Row | Issue]:
    raw = path.read_bytes()
    if b"\x00" in raw:
        yield Issue("binary_file", f"{path.name} is not a text file (NUL bytes)", None)
        return
    try:
        text = raw.decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        yield Issue("invalid_utf8", f"not valid UTF-8 at byte {e.start}", None)
        return
    if not text.strip():
        yield Issue("empty_file", f"{path.name} is empty", None)
        return
    yield Row(1, {"text": text})


def iter_rows(path: str | os.PathLike) -> Iterator[Row | Issue]:
    """Rows of any supported file, choosing the reader by extension (JSONL when unsure)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".json":
        return iter_json_array(p)
    if suffix == ".csv":
        return iter_csv(p)
    if suffix in TEXT_SUFFIXES:
        return iter_text(p)
    return iter_jsonl(p)
