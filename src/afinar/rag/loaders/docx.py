"""Word (.docx) with python-docx: body paragraphs and tables in document order.

Paragraph styles decide the block kind: ``Title`` is the document title (a level-0 heading),
``Heading N`` a heading of level N, list styles (``List Bullet``, ``List Number``, ``List
Paragraph``...) or numbered paragraphs are gathered into one ``list`` block per run, and code-like
styles (``Code``, ``Source Code``, ``HTML Preformatted``, ``Macro Text``) into one ``code`` block
per run. Tables become ``table`` blocks, one row per line with cells joined by " | " (a merged
cell counted once). The title is the core property ``title``, else the Title paragraph, else the
first level-1 heading. Headers, footers, comments and text boxes are not read.
"""

from __future__ import annotations

import re
from pathlib import Path

import docx
from docx.table import Table
from docx.text.paragraph import Paragraph

from afinar.rag.document import Document, DocumentBuilder
from afinar.rag.loaders.base import LoadOptions, normalize_spaces, register

_HEADING = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)
_CODE_STYLES = ("code", "source code", "html preformatted", "macro text", "plain text")


@register(".docx")
def load_docx(path: Path, options: LoadOptions) -> Document:
    document = docx.Document(str(path))
    builder = DocumentBuilder(str(path))
    run_kind: str | None = None  # "list" or "code" while consecutive paragraphs accumulate
    run: list[str] = []
    title = None

    def flush() -> None:
        nonlocal run_kind
        if run_kind:
            builder.add(run_kind, "\n".join(run))
        run.clear()
        run_kind = None

    for element in document.element.body.iterchildren():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "tbl":
            flush()
            builder.add("table", "", rows=_table_rows(Table(element, document)))
            continue
        if tag != "p":
            continue
        para = Paragraph(element, document)
        kind, level = _classify(para)
        text = para.text if kind == "code" else normalize_spaces(para.text)
        if kind in ("list", "code"):
            if run_kind != kind:
                flush()
                run_kind = kind
            run.append(("- " + text) if kind == "list" and text else text)
            continue
        flush()
        if kind == "heading":
            builder.add("heading", text, level=level)
            if title is None and level == 0 and text:
                title = text
        else:
            builder.add("paragraph", text)
    flush()
    core_title = (document.core_properties.title or "").strip()
    if core_title:
        title = core_title
    elif title is None:
        title = next((b.text for b in builder.blocks if b.kind == "heading" and b.level == 1),
                     None)
    return builder.build(title=title)


def _classify(para: Paragraph) -> tuple[str, int]:
    """(kind, heading level) from the paragraph's style and numbering."""
    try:
        style = (para.style.name or "") if para.style is not None else ""
    except (KeyError, AttributeError):  # a style id missing from styles.xml
        style = ""
    lowered = style.lower()
    if lowered == "title":
        return "heading", 0
    match = _HEADING.match(style)
    if match:
        return "heading", max(1, int(match.group(1)))
    if lowered.startswith("list") or para._p.pPr is not None and para._p.pPr.numPr is not None:
        return "list", 0
    if lowered in _CODE_STYLES:
        return "code", 0
    return "paragraph", 0


def _table_rows(table: Table) -> list[str]:
    rows = []
    for row in table.rows:
        cells, previous = [], None
        for cell in row.cells:  # a horizontally merged cell is repeated: keep it once
            if cell._tc is previous:
                continue
            previous = cell._tc
            cells.append(normalize_spaces(cell.text))
        if any(cells):
            rows.append(" | ".join(cells))
    return rows
