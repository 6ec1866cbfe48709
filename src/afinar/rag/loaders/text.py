"""Plain text (.txt): paragraphs split on blank lines, with the headings that can be told reliably.

Headings recognised (each must be a paragraph of its own, starting at column 0):

- numbered section titles, as in the Debian FAQ and most manuals: ``3.2. How do I install?``
  (two or more dotted numbers; the level is the count of numbers, so 1.1 is level 2), possibly
  wrapped over up to four lines;
- ``Chapter 4. Compatibility issues`` / ``Part II`` / ``Appendix A`` lines (level 1);
- underlined titles: a line followed by a line of ``===`` (level 1) or ``---`` (level 2).

The first paragraph becomes the document's title (a level-0 heading) when it is one short line
without trailing punctuation. Consecutive bulleted or numbered paragraphs (``*``, ``-``, ``1.``,
``1.2.``) make one ``list`` block with one item per line, wrapped lines joined. Lines made only of
punctuation (rules such as ``-----``) are dropped. ALL-CAPS lines are not taken as headings: in
real files they are as often emphasis or table headers as titles.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from afinar.rag.document import Document, DocumentBuilder
from afinar.rag.loaders.base import LoadOptions, normalize_spaces, read_text, register

_NUMBERED = re.compile(r"^(\d+(?:\.\d+)+)\.?\s+\S")
_CHAPTER = re.compile(r"^(?:Chapter|CHAPTER|Part|PART|Appendix|APPENDIX)\s+(?:\d+|[IVXLC]+|[A-Z])"
                      r"(?:[.:]\s+\S|\s*$)")
_UNDERLINE = re.compile(r"^\s*(=+|-+|~+)\s*$")
_BULLET = re.compile(r"^\s*(?:[*\-+\u2022\u25e6\u25aa]|\d+(?:\.\d+)*[.)])\s+")
_MAX_HEADING_LINES = 4
_MAX_HEADING_CHARS = 300


@register(".txt", ".text")
def load_text(path: Path, options: LoadOptions) -> Document:
    return parse_plain_text(read_text(path, options), source=str(path))


def parse_plain_text(raw: str, *, source: str = "<text>") -> Document:
    """Split ``raw`` into heading, list and paragraph blocks (see the module docstring)."""
    raw = raw.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    raw = raw.replace("\u00a0", " ").expandtabs(8)
    builder = DocumentBuilder(source)
    title = None
    items: list[str] = []  # list items of consecutive bulleted paragraphs, one per line
    for i, lines in enumerate(_paragraphs(raw)):
        if not any(ch.isalnum() for line in lines for ch in line):
            continue  # a rule such as "-----" or "* * *"
        heading = _heading(lines)
        if heading is None and _BULLET.match(lines[0]):
            items.extend(_list_items(lines))
            continue
        if items:
            builder.add("list", "\n".join(items))
            items = []
        if heading is not None:
            level, text = heading
            builder.add("heading", text, level=level)
            if title is None and level == 1 and len(builder.blocks) == 1:
                title = text
        elif i == 0 and _is_title(lines):
            title = lines[0].strip()
            builder.add("heading", title, level=0)
        else:
            body = textwrap.dedent("\n".join(line.rstrip() for line in lines))
            builder.add("paragraph", body)
    if items:
        builder.add("list", "\n".join(items))
    return builder.build(title=title)


def _list_items(lines: list[str]) -> list[str]:
    """One line per item: hard-wrapped continuation lines are joined to their item; the items'
    relative indentation (nesting) is kept."""
    items: list[str] = []
    for line in lines:
        if _BULLET.match(line) or not items:
            items.append(line.rstrip())
        else:
            items[-1] += " " + line.strip()
    indent = min(len(item) - len(item.lstrip()) for item in items)
    return [item[indent:] for item in items]


def _paragraphs(raw: str) -> list[list[str]]:
    """Groups of consecutive non-blank lines."""
    groups: list[list[str]] = []
    current: list[str] = []
    for line in raw.split("\n"):
        if line.strip():
            current.append(line)
        elif current:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def _heading(lines: list[str]) -> tuple[int, str] | None:
    """(level, text) when the paragraph is a heading by one of the reliable rules, else None."""
    if len(lines) == 2 and _UNDERLINE.match(lines[1]) and not lines[0][:1].isspace():
        title, rule = lines[0].strip(), lines[1].strip()
        if title and len(rule) >= max(3, len(title) // 2):
            return (1 if rule[0] == "=" else 2), normalize_spaces(title)
    if len(lines) > _MAX_HEADING_LINES or any(line[:1].isspace() for line in lines):
        return None
    text = normalize_spaces(" ".join(lines))
    if len(text) > _MAX_HEADING_CHARS:
        return None
    match = _NUMBERED.match(text)
    if match:
        return match.group(1).count(".") + 1, text
    if _CHAPTER.match(text) and len(lines) == 1:
        return 1, text
    return None


def _is_title(lines: list[str]) -> bool:
    line = lines[0].strip()
    return (len(lines) == 1 and 0 < len(line) <= 100 and line[-1] not in ".,;:"
            and any(ch.isalpha() for ch in line) and not _BULLET.match(line))
