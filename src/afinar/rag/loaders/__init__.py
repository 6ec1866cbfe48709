"""Document loaders: one module per format, chosen by file extension through a registry.

``load_document(path)`` returns a ``Document`` or raises ``UnreadableDocument`` (an
``InvalidRequest`` with code ``unreadable_document``) whose message names the file and the reason:
unsupported extension, missing or empty file, binary junk, a parser error, or no text extracted.
``load_many(paths)`` yields a ``Document`` or a ``LoadFailure`` per path and never stops on a bad
file, so one corrupt upload cannot sink a batch. Tables of contents are dropped from every
format after loading (``afinar.rag.boilerplate``).

Formats, one module each: ``text`` (.txt), ``markdown`` (.md), ``html`` (.html, .htm, .xhtml),
``pdf``, ``docx``, ``jsonl`` (.jsonl, .ndjson, .json) and ``csv`` (.csv, .tsv). A new format is a
module (importing from ``loaders.base``) with a function decorated ``@register(".ext")``,
imported below; from another package, a function named in the entry point group
``afinar.loaders`` under its extension. ``LOADERS`` is the registry of extensions (lower case,
with the dot) and their loaders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from afinar.rag.boilerplate import strip_boilerplate
from afinar.rag.document import Document

# Importing the backends registers them (each imports what it needs from ``base``).
from afinar.rag.loaders import csv, docx, html, jsonl, markdown, pdf, text  # noqa: F401
from afinar.rag.loaders.base import (
    LOADERS,
    Loader,
    LoadOptions,
    UnreadableDocument,
    looks_binary,
    normalize_spaces,
    read_text,
    register,
)

__all__ = ["LOADERS", "LoadFailure", "LoadOptions", "Loader", "UnreadableDocument",
           "load_document", "load_many", "looks_binary", "normalize_spaces", "read_text",
           "register", "supported_extensions"]


@dataclass(frozen=True)
class LoadFailure:
    """A file ``load_many`` could not read, with the reason (the error's message)."""

    path: str
    message: str
    code: str = UnreadableDocument.code


def supported_extensions() -> list[str]:
    return LOADERS.names()


def load_document(path: str | os.PathLike, *, text_field: str = "text",
                  encoding: str | None = None) -> Document:
    """Load one file into a ``Document``, or raise ``UnreadableDocument`` naming it."""
    p = Path(path)
    source = str(path)
    if not p.suffix or p.suffix not in LOADERS:
        kind = f"extension {p.suffix!r}" if p.suffix else "a file without an extension"
        raise UnreadableDocument(source, f"unsupported format ({kind}); supported: "
                                         + ", ".join(supported_extensions()))
    if not p.is_file():
        raise UnreadableDocument(source, "no such file" if not p.exists() else "not a file")
    if p.stat().st_size == 0:
        raise UnreadableDocument(source, "the file is empty")
    loader = LOADERS.get(p.suffix)
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
