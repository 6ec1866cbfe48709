"""The loaders' common output: a ``Document`` made of typed ``Block``s with character offsets.

Every loader, whatever the format, produces the same shape, so chunking and citations need to know
nothing about formats. ``Document.text`` is the blocks' texts joined with a blank line, and each
block's ``start``/``end`` point into it (``doc.text[b.start:b.end] == b.text``); build documents
with ``DocumentBuilder`` to keep that invariant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

BLOCK_KINDS = ("heading", "paragraph", "list", "table", "code")
BLOCK_SEPARATOR = "\n\n"


@dataclass
class Block:
    """One structural unit of a document.

    ``kind`` is heading, paragraph, list (one item per line), table (``rows``: one string per row,
    header row first, cells joined with " | "; ``text`` is the rows joined by newlines) or code
    (one source line per line). ``level`` is the heading level (1 = top); ``page`` is 1-based
    where the format has pages.
    """

    kind: str
    text: str
    level: int = 0
    page: int | None = None
    start: int = 0
    end: int = 0
    rows: list[str] | None = None


@dataclass
class Document:
    """A loaded file: its full text, its blocks (offsets into ``text``), title and metadata."""

    source: str
    text: str
    blocks: list[Block]
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def headings(self) -> list[Block]:
        return [b for b in self.blocks if b.kind == "heading"]

    @property
    def pages(self) -> list[int]:
        """The page numbers that carry text, in order (empty for formats without pages)."""
        return sorted({b.page for b in self.blocks if b.page is not None})


class DocumentBuilder:
    """Accumulates blocks, skipping empty ones, and assigns their offsets into the joined text."""

    def __init__(self, source: str):
        self.source = source
        self.blocks: list[Block] = []
        self._parts: list[str] = []
        self._length = 0

    def add(self, kind: str, text: str, *, level: int = 0, page: int | None = None,
            rows: list[str] | None = None) -> Block | None:
        """Append a block; a table's text is built from its rows. Blank blocks are dropped."""
        if kind not in BLOCK_KINDS:
            raise ValueError(f"unknown block kind {kind!r}")
        if kind == "table":  # one line per row, whatever the cells held
            rows = [" ".join(r.split()) for r in rows or [] if r.strip()]
            text = "\n".join(rows)
        elif kind == "code":  # indentation kept; blank lines around dropped
            text = re.sub(r"^(?:[ \t]*\n)+", "", text).rstrip()
        else:
            text = text.strip()
        if not text:
            return None
        start = self._length + (len(BLOCK_SEPARATOR) if self._parts else 0)
        block = Block(kind, text, level=level, page=page, start=start, end=start + len(text),
                      rows=rows if kind == "table" else None)
        self._parts.append(text)
        self._length = block.end
        self.blocks.append(block)
        return block

    def build(self, *, title: str | None = None, metadata: dict[str, Any] | None = None
              ) -> Document:
        text = BLOCK_SEPARATOR.join(self._parts)
        title = " ".join(title.split()) if title and title.strip() else None
        return Document(self.source, text, self.blocks, title, dict(metadata or {}))
