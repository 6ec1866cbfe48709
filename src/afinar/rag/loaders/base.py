"""What every document loader shares: the registry of extensions (``LOADERS``, ``register``),
the per-call options, the error for an unreadable file, and text decoding helpers.

A loader module imports from here (``afinar.rag.loaders`` re-exports these names, for plugins).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from afinar.errors import InvalidRequest
from afinar.rag.document import Document
from afinar.registry import Registry


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


def _extension(ext: str) -> str:
    """``MD``, ``.md`` -> ``.md``: how extensions are keyed."""
    return ext.lower() if ext.startswith(".") else "." + ext.lower()


LOADERS: Registry[Loader] = Registry("loader", "afinar.loaders", param="file",
                                     normalize=_extension)


def register(*extensions: str) -> Callable[[Loader], Loader]:
    """Register the decorated loader for ``extensions`` (".md", ...; case-insensitive); an
    extension that already has another loader is refused."""
    if not extensions:
        raise ValueError("register() needs at least one extension")
    return LOADERS.register(*extensions)


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
