"""JSON records (.jsonl one per line, .json an array): each record's text field is a paragraph.

``text_field`` names the field (``"text"`` by default; dots reach into nested objects, as in
``"data.body"``). Records without a non-empty string there are skipped and counted in
``Document.metadata["skipped_records"]``; a line that is not valid JSON makes the whole file
unreadable, with its line number, rather than being dropped silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from afinar.rag.document import Document, DocumentBuilder
from afinar.rag.loaders.base import LoadOptions, UnreadableDocument, read_text, register


@register(".jsonl", ".ndjson")
def load_jsonl(path: Path, options: LoadOptions) -> Document:
    return _build(path, _jsonl_records(path, read_text(path, options)), options.text_field)


@register(".json")
def load_json(path: Path, options: LoadOptions) -> Document:
    raw = read_text(path, options)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UnreadableDocument(path, f"invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise UnreadableDocument(path, "expected an array of records or one record object")
    return _build(path, iter(data), options.text_field)


def _jsonl_records(path: Path, raw: str) -> Iterator[Any]:
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            raise UnreadableDocument(path, f"line {number}: invalid JSON: {exc.msg}") from exc


def field_value(record: Any, field: str) -> Any:
    """``record[field]``, following dots into nested objects; None where a step is missing."""
    value = record
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _build(path: Path, records: Iterator[Any], text_field: str) -> Document:
    builder = DocumentBuilder(str(path))
    total = skipped = 0
    for record in records:
        total += 1
        value = field_value(record, text_field)
        if not isinstance(value, str) or not value.strip():
            skipped += 1
            continue
        builder.add("paragraph", value)
    if total and skipped == total:
        raise UnreadableDocument(
            path, f"none of the {total} records has a non-empty string field {text_field!r}")
    return builder.build(metadata={"records": total, "skipped_records": skipped,
                                   "text_field": text_field})
