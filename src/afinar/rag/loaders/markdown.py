"""Markdown (.md, .markdown): a line-based reader of the block structure that matters for RAG.

- ATX (``## Title``) and setext (``Title`` over ``===``/``---``) headings with their levels;
- fenced code (```` ``` ```` or ``~~~``) and indented code become one ``code`` block each, fences
  dropped;
- pipe tables become ``table`` blocks, one row per line (cells joined with " | "), the delimiter
  row dropped and the header row first;
- consecutive list items (``-``, ``*``, ``+``, ``1.``) become one ``list`` block, one item per
  line (continuation lines joined to their item, nesting kept as indentation);
- YAML front matter is skipped (its ``title:`` is used), ``>`` quote markers are removed,
  thematic breaks are dropped; inline markup is left as written.

The title is the front matter's ``title`` or else the first level-1 heading.
"""

from __future__ import annotations

import re
from pathlib import Path

from afinar.rag.document import Document, DocumentBuilder
from afinar.rag.loaders.base import LoadOptions, normalize_spaces, read_text, register

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:\s+(.*?))?(?:\s+#+)?\s*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$")
_TABLE_DELIM = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_BREAK = re.compile(r"^ {0,3}([-*_])(\s*\1){2,}\s*$")
_FRONT_TITLE = re.compile(r"^title:\s*[\"']?(.*?)[\"']?\s*$", re.MULTILINE)


@register(".md", ".markdown")
def load_markdown(path: Path, options: LoadOptions) -> Document:
    return parse_markdown(read_text(path, options), source=str(path))


def parse_markdown(raw: str, *, source: str = "<markdown>") -> Document:
    """Read ``raw`` Markdown into heading, paragraph, list, table and code blocks."""
    lines = raw.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4).split("\n")
    builder = DocumentBuilder(source)
    title = None
    i = _skip_front_matter(lines)
    if i:
        found = _FRONT_TITLE.search("\n".join(lines[1:i - 1]))
        title = found.group(1) if found else None
    para: list[str] = []

    def flush() -> None:
        if para:
            builder.add("paragraph", "\n".join(line.strip() for line in para))
            para.clear()

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            flush()
            i += 1
        elif fence := _FENCE.match(line):
            flush()
            mark = fence.group(1)
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(mark[0] * len(mark)):
                j += 1
            builder.add("code", "\n".join(lines[i + 1:j]))
            i = j + 1
        elif atx := _ATX.match(line):
            flush()
            text = normalize_spaces(atx.group(2) or "")
            builder.add("heading", text, level=len(atx.group(1)))
            if title is None and len(atx.group(1)) == 1 and text:
                title = text
            i += 1
        elif para and _SETEXT.match(line) and not _LIST_ITEM.match(para[0]):
            level = 1 if line.strip()[0] == "=" else 2
            text = normalize_spaces(" ".join(para))
            para.clear()
            builder.add("heading", text, level=level)
            if title is None and level == 1:
                title = text
            i += 1
        elif _BREAK.match(line):
            flush()
            i += 1
        elif "|" in line and i + 1 < len(lines) and _TABLE_DELIM.match(lines[i + 1]) \
                and "-" in lines[i + 1]:
            flush()
            rows = [_table_row(line)]
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                rows.append(_table_row(lines[i]))
                i += 1
            builder.add("table", "", rows=rows)
        elif not para and _LIST_ITEM.match(line):
            i = _read_list(lines, i, builder)
        elif not para and line.startswith("    "):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            builder.add("code", "\n".join(x[4:] for x in lines[i:j]))
            i = j
        else:
            para.append(re.sub(r"^ {0,3}>\s?", "", line))
            i += 1
    flush()
    return builder.build(title=title)


def _skip_front_matter(lines: list[str]) -> int:
    """Index of the first line after a leading ``---`` YAML block (0 when there is none)."""
    if not lines or lines[0].strip() != "---":
        return 0
    for j in range(1, min(len(lines), 200)):
        if lines[j].strip() in ("---", "..."):
            return j + 1
    return 0


def _table_row(line: str) -> str:
    cells = line.strip().strip("|").split("|")
    return " | ".join(normalize_spaces(c) for c in cells)


def _read_list(lines: list[str], i: int, builder: DocumentBuilder) -> int:
    """Read a run of list items from ``lines[i]``; add one ``list`` block; return the next index."""
    items: list[str] = []
    base = len(_LIST_ITEM.match(lines[i]).group(1))
    while i < len(lines):
        line = lines[i]
        item = _LIST_ITEM.match(line)
        if item and len(item.group(1)) >= base:
            depth = (len(item.group(1)) - base) // 2
            items.append("  " * depth + item.group(2) + " " + item.group(3).strip())
        elif line.strip() and items and (line.startswith(" ") or not _starts_block(line)):
            if lines[i - 1].strip() or line.startswith("  "):
                items[-1] += " " + line.strip()  # a continuation of the item
            else:
                break
        elif not line.strip():
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if not (_LIST_ITEM.match(nxt) or nxt.startswith("  ")):
                break
        else:
            break
        i += 1
    builder.add("list", "\n".join(items))
    return i


def _starts_block(line: str) -> bool:
    return bool(_ATX.match(line) or _FENCE.match(line) or _BREAK.match(line))
