"""Document loaders: one module per format, chosen by file extension through a registry.

``load_document(path)`` returns a ``Document`` or raises ``UnreadableDocument`` (an
``InvalidRequest`` with code ``unreadable_document``) whose message names the file and the reason:
unsupported extension, missing or empty file, binary junk, a parser error, or no text extracted.
``load_many(paths)`` yields a ``Document`` or a ``LoadFailure`` per path and never stops on a bad
file, so one corrupt upload cannot sink a batch. Tables of contents are dropped from every
format after loading (``afinar.rag.boilerplate``).

Formats, one module each: ``text`` (.txt), ``markdown`` (.md), ``html`` (.html, .htm, .xhtml),
``pdf``, ``docx``, ``jsonl`` (.jsonl, .ndjson, .json) and ``csv`` (.csv, .tsv). A new format is a
module with a function decorated ``@register(".ext")``, imported at the bottom of this file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from afinar.errors import InvalidRequest
from afinar.rag.boilerplate import strip_boilerplate
from afinar.rag.document import Document

__all__ = ["LOADERS", "LoadFailure", "LoadOptions", "UnreadableDocument", "load_document",
           "load_many", "register", "supported_extensions"]


class UnreadableDocument(InvalidRequest):
    """A file that cannot be turned into text: unsupported, corrupt, binary or empty."""

    code = "unreadable_document"

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}", param="file")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class LoadOptions:
    """Per-call options; a loader reads only what applies to its format."""

    text_field: str = "text"  # .json/.jsonl: the field that holds each record's text
    encoding: str | None = None  # text formats: None = UTF-8 (BOM-aware), else this codec


Loader = Callable[[Path, LoadOptions], Document]
LOADERS: dict[str, Loader] = {}


def register(*extensions: str) -> Callable[[Loader], Loader]:
    """Register the decorated loader for ``extensions`` (".md", ...; case-insensitive)."""

    def wrap(fn: Loader) -> Loader:
        for ext in extensions:
            ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
            if ext in LOADERS and LOADERS[ext] is not fn:
                raise ValueError(f"extension {ext} already has a loader")
            LOADERS[ext] = fn
        return fn

    return wrap


def looks_binary(data: bytes) -> bool:
    """True for content that is not text: NUL bytes or many control characters in the head."""
    head = data[:8192]
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return bool(head) and controls / len(head) > 0.02


def read_text(path: Path, options: LoadOptions) -> str:
    """Decode a text file: the given encoding, else UTF-8 (with or without BOM), else cp1252.

    Binary content is refused (``UnreadableDocument``) instead of being decoded into junk.
    """
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with a BOM: NULs are expected
        return data.decode("utf-16")
    if looks_binary(data):
        raise UnreadableDocument(path, "binary content, not text")
    if options.encoding:
        try:
            return data.decode(options.encoding)
        except (LookupError, UnicodeDecodeError) as exc:
            raise UnreadableDocument(path, f"cannot decode as {options.encoding}: {exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def normalize_spaces(text: str) -> str:  # noqa: F811 (a parameter, not the module)
    """Collapse runs of whitespace (including no-break spaces) into single spaces."""
    return " ".join(text.split())


@dataclass(frozen=True)
class LoadFailure:
    """A file ``load_many`` could not read, with the reason (the error's message)."""

    path: str
    message: str
    code: str = UnreadableDocument.code


def supported_extensions() -> list[str]:
    return sorted(LOADERS)


def load_document(path: str | os.PathLike, *, text_field: str = "text",
                  encoding: str | None = None) -> Document:
    """Load one file into a ``Document``, or raise ``UnreadableDocument`` naming it."""
    p = Path(path)
    source = str(path)
    loader = LOADERS.get(p.suffix.lower())
    if loader is None:
        kind = f"extension {p.suffix!r}" if p.suffix else "a file without an extension"
        raise UnreadableDocument(source, f"unsupported format ({kind}); supported: "
                                         + ", ".join(supported_extensions()))
    if not p.is_file():
        raise UnreadableDocument(source, "no such file" if not p.exists() else "not a file")
    if p.stat().st_size == 0:
        raise UnreadableDocument(source, "the file is empty")
    try:
        doc = loader(p, LoadOptions(text_field=text_field, encoding=encoding))
    except UnreadableDocument as exc:
        if exc.path == source:
            raise
        raise UnreadableDocument(source, exc.reason) from exc
    except MemoryError:
        raise
    except Exception as exc:  # any parser failure becomes a clear, per-file error
        fmt = p.suffix.lower().lstrip(".")
        raise UnreadableDocument(source, f"cannot parse as {fmt}: "
                                         f"{type(exc).__name__}: {exc}") from exc
    if not doc.blocks or not doc.text.strip():
        raise UnreadableDocument(source, "no text could be extracted")
    doc = strip_boilerplate(doc)
    doc.source = source
    doc.metadata.setdefault("format", p.suffix.lower().lstrip("."))
    return doc


def load_many(paths: Iterable[str | os.PathLike], *, text_field: str = "text",
              encoding: str | None = None) -> Iterator[Document | LoadFailure]:
    """Load each path in turn; a file that fails yields a ``LoadFailure`` and the batch goes on."""
    for path in paths:
        try:
            yield load_document(path, text_field=text_field, encoding=encoding)
        except UnreadableDocument as exc:
            yield LoadFailure(str(path), exc.message)


# Importing the backends registers them (they import the names above from this package).
from afinar.rag.loaders import csv, docx, html, jsonl, markdown, pdf, text  # noqa: E402,F401,F811
