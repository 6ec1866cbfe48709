"""PDF (.pdf) with pypdf: the text of each page as paragraph blocks carrying their page number.

Nothing fancy is detected (no headings, columns or tables): each page's text is split into
paragraphs on blank lines, or, when the extractor gives none (the usual case), where a line ends
a sentence well short of the page's full line width, or starts with a bullet. A trailing line
that is only a page number ("12", "iv") is dropped.

Word gaps: TeX-made PDFs (such as the Debian FAQ) position words with kerning offsets inside
``TJ`` arrays instead of space characters, and pypdf only turns offsets wider than half the
font's space glyph into spaces, which for subset CID fonts without a space glyph means never:
"Thisdocumentanswersquestions". Before pypdf reads each ``TJ``, offsets of at least 0.15 em
(TeX's narrowest inter-word glue is ~0.22 em, its widest kern ~0.11 em) are widened so that pypdf
sees a word gap. Scanned PDFs without a text layer yield no text and are reported as such.
"""

from __future__ import annotations

import re
from pathlib import Path

from pypdf import PdfReader
from pypdf.generic import ArrayObject, FloatObject

from afinar.rag.document import Document, DocumentBuilder
from afinar.rag.loaders import LoadOptions, UnreadableDocument, register

_WORD_GAP = 150  # thousandths of an em
_BULLET = re.compile(r"^\s*[\u2022\u25e6\u25aa\u2013*\-]\s+")
_PAGE_NUMBER = re.compile(r"^\s*(\d{1,4}|[ivxlcdm]{1,8})\s*$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?:][\"'\u201d\u2019)]*$")


@register(".pdf")
def load_pdf(path: Path, options: LoadOptions) -> Document:
    reader = PdfReader(path)
    if reader.is_encrypted and not reader.decrypt(""):
        raise UnreadableDocument(path, "the PDF is encrypted with a password")
    builder = DocumentBuilder(str(path))
    failed: list[int] = []
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text(visitor_operand_before=_widen_word_gaps)
        except Exception:  # one damaged page must not lose the others
            failed.append(number)
            continue
        for para in page_paragraphs(text):
            builder.add("paragraph", para, page=number)
    if not builder.blocks and not failed:
        raise UnreadableDocument(path, "no text layer (a scanned PDF? OCR is not supported)")
    info = reader.metadata
    title = info.title if info is not None and isinstance(info.title, str) else None
    metadata = {"pages": len(reader.pages)}
    if failed:
        metadata["failed_pages"] = failed
    return builder.build(title=title, metadata=metadata)


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
