"""Boilerplate that no format-specific loader can tell from content, removed from every document.

Tables of contents match every heading-shaped question ("What is Debian GNU/Linux?" is a line of
the contents) while holding none of the answers, so they crowd the answer out of the top ranks.
A block is a table of contents when:
- at least three of its lines end in dotted leaders and a page number ("1.2 What is it? . . . 1"),
  and they are at least a third of its lines; or
- it is made of numbered entries ("1.", "1.1.", "2.3.4 Title"), at least three of them with two
  or more numbers, each line an entry or a wrapped continuation of one, with no line ending a
  sentence in a full stop (questions and titles, not prose); or
- it follows a "Contents" / "Table of Contents" title and looks like either.
The title itself goes with it. Format-specific boilerplate stays in the loaders that can see it:
HTML navigation and footers (``loaders/html.py``), PDF running headers, footers, page numbers and
contents pages (``loaders/pdf.py``).
"""

from __future__ import annotations

import re

from afinar.rag.document import Block, Document, DocumentBuilder

_LEADER = re.compile(r"(?:\.\s?){4,}\s*\d{1,4}\s*$")
_ENTRY = re.compile(r"^\s*\d+(?:\.\d+)*\.?\s+\S")
_DEEP_ENTRY = re.compile(r"^\s*\d+(?:\.\d+)+\.?\s+\S")
_CONTENTS = re.compile(r"^\s*(table of )?contents\s*:?\s*$", re.IGNORECASE)
_PROSE_END = re.compile(r"[a-z0-9)\]][.;]\s*$")


def is_toc_block(block: Block) -> bool:
    if block.kind in ("code", "table", "heading"):
        return False
    lines = [ln for ln in block.text.split("\n") if ln.strip()]
    if not lines:
        return False
    leaders = sum(1 for ln in lines if _LEADER.search(ln))
    if leaders >= 3 and leaders >= len(lines) / 3:
        return True
    deep = sum(1 for ln in lines if _DEEP_ENTRY.match(ln))
    entries = sum(1 for ln in lines if _ENTRY.match(ln))
    if deep < 3 or entries < len(lines) / 2:
        return False
    return not any(_PROSE_END.search(ln) and not _LEADER.search(ln) for ln in lines)


def strip_boilerplate(doc: Document) -> Document:
    """The document without its tables of contents (offsets rebuilt); the same object when there
    is nothing to drop. ``metadata["dropped_blocks"]`` counts what went."""
    keep: list[Block] = []
    dropped = 0
    blocks = doc.blocks
    for i, b in enumerate(blocks):
        if is_toc_block(b):
            dropped += 1
            if keep and _CONTENTS.match(keep[-1].text):
                keep.pop()
                dropped += 1
            continue
        keep.append(b)
    if not dropped or not keep:
        return doc
    builder = DocumentBuilder(doc.source)
    for b in keep:
        builder.add(b.kind, b.text, level=b.level, page=b.page, rows=b.rows)
    out = builder.build(title=doc.title, metadata=doc.metadata)
    out.metadata["dropped_blocks"] = dropped
    return out
