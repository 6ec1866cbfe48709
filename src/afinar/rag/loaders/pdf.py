"""PDF (.pdf) with pypdf: headings and paragraphs, each carrying its page number.

Layout read from the text layer (pypdf's text visitor gives each piece's font and size):
- Headings: lines set at least 15% larger than the body text (the size most characters use), and
  lines named by the PDF's outline (bookmarks) when it has one, set bold or at body size;
  consecutive heading lines are one heading ("Chapter 1" over "Definitions and overview", a
  wrapped title). The level is the outline's depth when the outline names it, else the depth of
  its numbering ("1.2" is 2), else its size.
- Boilerplate dropped: table-of-contents pages ("Contents" title or a third of the lines ending
  in dotted leaders and a page number; listed in ``metadata["toc_pages"]``), running headers and
  footers (a page's first or last line whose shape, digits aside, recurs on three pages, or an
  upper-case line whose first two words recur on a quarter of the pages, such as "CHAPTER 7.
  BASICS OF ..."), and lines that are only a page number ("12", "iv").
- Paragraphs: the lines between headings split on blank lines, or, when the extractor gives
  none (the usual case), where a line ends a sentence well short of the page's full line width,
  or starts with a bullet.

Word gaps: TeX-made PDFs (such as the Debian FAQ) position words with kerning offsets inside
``TJ`` arrays instead of space characters, and pypdf only turns offsets wider than half the
font's space glyph into spaces, which for subset CID fonts without a space glyph means never:
"Thisdocumentanswersquestions". Before pypdf reads each ``TJ``, offsets of at least 0.15 em
(TeX's narrowest inter-word glue is ~0.22 em, its widest kern ~0.11 em) are widened so that pypdf
sees a word gap. Scanned PDFs without a text layer yield no text and are reported as such.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pypdf import PdfReader
from pypdf.generic import ArrayObject, FloatObject

from afinar.rag.document import Document, DocumentBuilder
from afinar.rag.loaders.base import LoadOptions, UnreadableDocument, register

_WORD_GAP = 150  # thousandths of an em
_BULLET = re.compile(r"^\s*[\u2022\u25e6\u25aa\u2013*\-]\s+")
_PAGE_NUMBER = re.compile(r"^\s*(\d{1,4}|[ivxlcdm]{1,8})\s*$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?:][\"'\u201d\u2019)]*$")
_LEADER = re.compile(r"(?:\.\s?){4,}\s*\d{1,4}\s*$")  # "What is it? . . . . . 12"
_CONTENTS = re.compile(r"^(table of )?contents$", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)*\.?)\s+")
_CHAPTER = re.compile(r"^\s*(chapter|part|appendix)\s+(\d+|[ivxlc]+|[a-z])\b[.:]?\s*",
                      re.IGNORECASE)


@dataclass
class _Line:
    text: str
    size: float  # the font size most of its characters are set in (points, after scaling)
    bold: bool


@register(".pdf")
def load_pdf(path: Path, options: LoadOptions) -> Document:
    reader = PdfReader(path)
    if reader.is_encrypted and not reader.decrypt(""):
        raise UnreadableDocument(path, "the PDF is encrypted with a password")
    pages: list[list[_Line] | None] = []
    for page in reader.pages:
        try:
            pages.append(_page_lines(page))
        except Exception:  # one damaged page must not lose the others
            pages.append(None)
    failed = [n for n, lines in enumerate(pages, start=1) if lines is None]
    if not any(pages) and not failed:
        raise UnreadableDocument(path, "no text layer (a scanned PDF? OCR is not supported)")
    body = _body_size([ln for lines in pages if lines for ln in lines])
    outline = _outline(reader)
    toc = [n for n, lines in enumerate(pages, start=1) if lines and is_toc_page(lines)]
    dropped = _running_lines(pages, body)
    builder = DocumentBuilder(str(path))
    for number, lines in enumerate(pages, start=1):
        if not lines or number in toc:
            continue
        lines = [ln for i, ln in enumerate(lines) if (number, i) not in dropped]
        titles = outline.get(number, []) + outline.get(number - 1, []) + outline.get(number + 1, [])
        _page_blocks(builder, lines, number, body, titles)
    info = reader.metadata
    title = info.title if info is not None and isinstance(info.title, str) else None
    metadata: dict = {"pages": len(reader.pages)}
    if failed:
        metadata["failed_pages"] = failed
    if toc:
        metadata["toc_pages"] = toc
    return builder.build(title=title, metadata=metadata)


def _page_lines(page) -> list[_Line]:
    """The page's lines as pypdf extracts them, each with its dominant font size and weight.

    pypdf's text visitor receives exactly the pieces that make up ``extract_text``'s result, with
    the font and text matrix of each, so every character can be given its size."""
    pieces: list[tuple[str, float, bool]] = []

    def visit(text, cm, tm, font, size):
        scale = max(abs(float(tm[3])), abs(float(tm[0]))) if tm else 1.0
        name = str((font or {}).get("/BaseFont", "")) if hasattr(font, "get") else ""
        pieces.append((text, round(float(size or 0) * (scale or 1.0), 1),
                       "bold" in name.lower() or "black" in name.lower()))

    page.extract_text(visitor_operand_before=_widen_word_gaps, visitor_text=visit)
    lines: list[_Line] = []
    chars: list[str] = []
    weights: Counter = Counter()
    for text, size, bold in pieces:
        for part_no, part in enumerate(text.replace("\r", "\n").split("\n")):
            if part_no:
                _flush(lines, chars, weights)
            chars.append(part)
            n = len(part.strip())
            if n:
                weights[(size, bold)] += n
    _flush(lines, chars, weights)
    while lines and _PAGE_NUMBER.match(lines[-1].text):
        lines.pop()
    while lines and _PAGE_NUMBER.match(lines[0].text):
        lines.pop(0)
    return lines


def _flush(lines: list[_Line], chars: list[str], weights: Counter) -> None:
    text = "".join(chars).rstrip()
    if text.strip():
        (size, bold), _ = weights.most_common(1)[0] if weights else ((0.0, False), 0)
        lines.append(_Line(text, size, bold))
    chars.clear()
    weights.clear()


def _body_size(lines: list[_Line]) -> float:
    """The size most of the document's characters are set in."""
    sizes: Counter = Counter()
    for ln in lines:
        sizes[ln.size] += len(ln.text)
    return sizes.most_common(1)[0][0] if sizes else 0.0


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _outline(reader: PdfReader) -> dict[int, list[tuple[str, int]]]:
    """Page number -> [(normalised title, level)] from the PDF's outline (bookmarks), if any."""
    out: dict[int, list[tuple[str, int]]] = {}

    def walk(items, level):
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            try:
                number = reader.get_destination_page_number(item) + 1
                title = str(item.title)
            except Exception:  # a broken bookmark is only a missed heading
                continue
            if _norm(title):
                out.setdefault(number, []).append((_norm(title), level))

    try:
        walk(reader.outline, 1)
    except Exception:
        return {}
    return out


def is_toc_page(lines: list[_Line]) -> bool:
    """A table-of-contents page: a 'Contents' title, or a third of its lines end in dotted
    leaders and a page number."""
    leaders = sum(1 for ln in lines if _LEADER.search(ln.text))
    titled = bool(lines) and _CONTENTS.match(lines[0].text.strip()) is not None
    return leaders >= 3 and (titled or leaders >= len(lines) / 3)


def _running_lines(pages: list[list[_Line] | None], body: float) -> set[tuple[int, int]]:
    """(page, line index) of running headers and footers: a page's first or last line whose
    shape (digits as #) recurs on at least three pages, or, for an upper-case line such as
    "CHAPTER 7. BASICS OF ...", whose first two words' shape recurs on a quarter of the pages."""
    spots: list[tuple[int, int, str]] = []
    for number, lines in enumerate(pages, start=1):
        if not lines:
            continue
        for i in {0, len(lines) - 1}:
            spots.append((number, i, lines[i].text))
    shape = Counter(re.sub(r"\d+", "#", _ws(t)) for _, _, t in spots)
    head = Counter(_head(t) for _, _, t in spots if _upper(t))
    n_pages = sum(1 for p in pages if p)
    dropped = set()
    for number, i, text in spots:
        if len(text) > 160 or pages[number - 1][i].size >= body * 1.15:
            continue  # headings ("Chapter 3" opening each chapter) are not running lines
        if shape[re.sub(r"\d+", "#", _ws(text))] >= 3 or (
                _upper(text) and head[_head(text)] >= max(3, n_pages / 4)):
            dropped.add((number, i))
    return dropped


def _ws(text: str) -> str:
    return " ".join(text.split()).lower()


def _head(text: str) -> str:
    return " ".join(re.sub(r"\d+", "#", _ws(text)).split()[:2])


def _upper(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 4 and sum(c.isupper() for c in letters) >= 0.8 * len(letters)


def _page_blocks(builder: DocumentBuilder, lines: list[_Line], page: int, body: float,
                 titles: list[tuple[str, int]]) -> None:
    """Headings (set larger than the body, or named by the outline) and the paragraphs between
    them; consecutive heading lines (a wrapped title, "Chapter 1" over its name) are one."""
    run: list[_Line] = []
    heading: list[_Line] = []

    def flush_run():
        if run:
            for para in page_paragraphs("\n".join(ln.text for ln in run)):
                builder.add("paragraph", para, page=page)
            run.clear()

    def flush_heading():
        if heading:
            parts = [" ".join(ln.text.split()) for ln in heading]
            if len(parts) > 1 and _CHAPTER.sub("", parts[0]) == "":
                parts[0] = parts[0].rstrip(".:") + "."  # "Chapter 1. Definitions and overview"
            text = " ".join(parts)
            builder.add("heading", text, level=_level(text, heading, body, titles), page=page)
            heading.clear()

    for ln in lines:
        if _is_heading(ln, body, titles, heading):
            flush_run()
            bare = heading and _CHAPTER.sub("", " ".join(x.text for x in heading)) == ""
            if heading and not bare and (
                    _NUMBER.match(ln.text) or _CHAPTER.match(ln.text)
                    or abs(ln.size - heading[-1].size) > 0.1 * heading[-1].size):
                flush_heading()  # a new title, not the wrapped rest of the open one
            heading.append(ln)
        else:
            flush_heading()
            run.append(ln)
    flush_heading()
    flush_run()


def _is_heading(ln: _Line, body: float, titles: list[tuple[str, int]],
                open_heading: list[_Line]) -> bool:
    text = ln.text.strip()
    if len(text) > 200 or _LEADER.search(text):
        return False
    large = body > 0 and ln.size >= body * 1.15
    if large and (len(text) <= 120 or open_heading):
        return True
    key = _norm(_NUMBER.sub("", text))
    if len(key) < 4:
        return False
    named = any(t == key or (t.startswith(key) and len(key) >= 12) for t, _ in titles)
    return named and (ln.bold or ln.size >= body)


def _level(text: str, lines: list[_Line], body: float, titles: list[tuple[str, int]]) -> int:
    key = _norm(_CHAPTER.sub("", _NUMBER.sub("", text)))
    for t, level in titles:
        if t == key or key.startswith(t) or t.startswith(key):
            return level
    m = _NUMBER.match(text)
    if m:
        return min(6, m.group(1).rstrip(".").count(".") + 1)
    if _CHAPTER.match(text):
        return 1
    size = max(ln.size for ln in lines)
    return 1 if size >= body * 1.6 else 2 if size >= body * 1.3 else 3


def _widen_word_gaps(operator: bytes, operands: list, cm: object, tm: object) -> None:
    """Scale ``TJ`` offsets wide enough to be word gaps so pypdf emits a space for them."""
    if operator != b"TJ" or not operands or not isinstance(operands[0], ArrayObject):
        return
    array = operands[0]
    for i, item in enumerate(array):
        if isinstance(item, (int, float)) and not isinstance(item, bool) and item <= -_WORD_GAP:
            array[i] = FloatObject(float(item) * 10)


def page_paragraphs(text: str) -> list[str]:
    """Split one page's extracted text into paragraphs (see the module docstring)."""
    lines = [line.rstrip() for line in text.replace("\r", "\n").split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and _PAGE_NUMBER.match(lines[-1]):
        lines.pop()
    raw = "\n".join(lines).strip("\n")
    if re.search(r"\n\s*\n", raw):
        return [p.strip() for p in re.split(r"\n\s*\n", raw) if p.strip()]
    lines = [line for line in lines if line.strip()]
    if not lines:
        return []
    width = max(len(line) for line in lines)
    paragraphs: list[list[str]] = [[lines[0]]]
    for prev, line in zip(lines, lines[1:]):
        ends = _SENTENCE_END.search(prev.strip()) and len(prev) < 0.8 * width
        if ends or _BULLET.match(line):
            paragraphs.append([line])
        else:
            paragraphs[-1].append(line)
    return ["\n".join(p).strip() for p in paragraphs]
