"""Document loaders: every registered extension on a small fixture written here, corrupt inputs,
``load_many`` going past failures, and the real Debian FAQ in text, HTML and PDF (../shared)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from afinar.errors import InvalidRequest
from tests.conftest import SHARED, needs_shared
from afinar.rag.document import Document
from afinar.rag.loaders import (
    LOADERS,
    LoadFailure,
    UnreadableDocument,
    load_document,
    load_many,
)

CORPORA = SHARED / "corpora"
needs_corpora = needs_shared("corpora/debian-faq.txt")

MARKDOWN = """---
title: Front Title
---
# Guide

Intro paragraph that
wraps over two lines.

Install
-------

1. Download the archive.
2. Unpack it
   somewhere.
- nested? no, a new list

```python
# not a heading
print("hi")
```

| name | value |
|------|------:|
| alpha | 1 |
| beta | 2 |

### Deep heading ###
> Quoted text.
"""

HTML = """<!DOCTYPE html><html><head><title>Page Title</title>
<style>.x { background-repeat: no-repeat }</style><script>var SCRIPT_SECRET = 1;</script></head>
<body><nav><a href="/">NAV_PHRASE home</a></nav>
<header>SITE_BANNER</header><div class="sidebar">SIDEBAR_TEXT</div>
<main><h1>Main <em>Heading</em></h1><p>First <b>bold</b> para.<br>Same para.</p>
<h2>Table</h2><table><thead><tr><th>Name</th><th>Role</th></tr></thead>
<tbody><tr><td>Ann</td><td>Dev</td></tr><tr><td>Bob</td><td>Ops</td></tr></tbody></table>
<pre>line one
  line two</pre><ul><li>item a<ul><li>sub item</li></ul></li><li>item b</li></ul>
<dl><dt>Term</dt><dd>Definition.</dd></dl><div hidden>HIDDEN_TEXT</div></main>
<footer>FOOTER_TEXT</footer></body></html>"""

TEXT = """Project Handbook

1. Overview? No, this line is a list item.

1.1. What is this?

    It is a handbook. It has sentences.

Setup notes
===========

    * first bullet
      wrapped here
    * second bullet
"""


def _tiny_pdf(pages: list[str]) -> bytes:
    """A valid PDF with one Helvetica text line per input line, no external tool needed."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [%s] /Count %d >>"
               % (" ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages))).encode(), len(pages)),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, text in enumerate(pages):
        stream = "\n".join(["BT /F1 12 Tf 72 720 Td 14 TL"]
                           + [f"({line}) Tj T*" for line in text.split("\n")] + ["ET"]).encode()
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
                       b"<< /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i))
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)


def _write_docx(path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Handbook", level=0)
    d.add_heading("Setup", level=1)
    d.add_paragraph("Install the tool first.")
    d.add_paragraph("first item", style="List Bullet")
    d.add_paragraph("second item", style="List Bullet")
    d.add_heading("Details", level=2)
    table = d.add_table(rows=3, cols=2)
    for r, (a, b) in enumerate([("Key", "Value"), ("port", "8080"), ("host", "local")]):
        table.cell(r, 0).text, table.cell(r, 1).text = a, b
    d.add_paragraph("After the table.")
    d.save(str(path))


RECORDS = [{"text": "First record."}, {"title": "no text here"}, {"text": "Second record."},
           {"text": ""}]


def _writer(ext: str):
    """A function writing a small fixture of the format behind ``ext``."""
    if ext in (".md", ".markdown"):
        return lambda p: p.write_text(MARKDOWN)
    if ext in (".html", ".htm", ".xhtml"):
        return lambda p: p.write_text(HTML)
    if ext in (".txt", ".text"):
        return lambda p: p.write_text(TEXT)
    if ext == ".pdf":
        return lambda p: p.write_bytes(_tiny_pdf(["First page line.", "Second page line."]))
    if ext == ".docx":
        return _write_docx
    if ext == ".json":
        return lambda p: p.write_text(json.dumps(RECORDS))
    if ext in (".jsonl", ".ndjson"):
        return lambda p: p.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    if ext == ".csv":
        return lambda p: p.write_text("name,city\nAnn,Oslo\n\nBob,\n")
    if ext == ".tsv":
        return lambda p: p.write_text("name\tcity\nAnn\tOslo\nBob\t\n")
    raise AssertionError(f"no fixture for the registered extension {ext}: add one")


# extension -> (block kinds that must appear, text that must appear, text that must not)
EXPECT = {
    ".md": ({"heading", "paragraph", "list", "code", "table"},
            ["Intro paragraph", "# not a heading", "alpha | 1", "Quoted text."],
            ["title:", "|---"]),
    ".html": ({"heading", "paragraph", "table", "code", "list"},
              ["Main Heading", "First bold para. Same para.", "Ann | Dev", "  line two",
               "- Term: Definition."],
              ["NAV_PHRASE", "SCRIPT_SECRET", "background-repeat", "SITE_BANNER", "SIDEBAR_TEXT",
               "FOOTER_TEXT", "HIDDEN_TEXT"]),
    ".txt": ({"heading", "paragraph", "list"}, ["It is a handbook.", "* first bullet wrapped"],
             ["===="]),
    ".pdf": ({"paragraph"}, ["First page line.", "Second page line."], []),
    ".docx": ({"heading", "paragraph", "list", "table"},
              ["Install the tool first.", "- first item", "Key | Value", "port | 8080"], []),
    ".json": ({"paragraph"}, ["First record.", "Second record."], ["no text here"]),
    ".jsonl": ({"paragraph"}, ["First record.", "Second record."], ["no text here"]),
    ".csv": ({"paragraph"}, ["name: Ann; city: Oslo", "name: Bob"], ["name: Bob; city"]),
}
EXPECT[".markdown"] = EXPECT[".md"]
EXPECT[".htm"] = EXPECT[".xhtml"] = EXPECT[".html"]
EXPECT[".text"] = EXPECT[".txt"]
EXPECT[".ndjson"] = EXPECT[".jsonl"]
EXPECT[".tsv"] = EXPECT[".csv"]


def _check_offsets(doc: Document) -> None:
    for block in doc.blocks:
        assert doc.text[block.start:block.end] == block.text
    assert "\n\n".join(b.text for b in doc.blocks) == doc.text


@pytest.mark.parametrize("ext", sorted(LOADERS))
def test_every_registered_loader_reads_its_fixture(tmp_path, ext):
    path = tmp_path / f"sample{ext}"
    _writer(ext)(path)
    kinds, present, absent = EXPECT[ext]
    doc = load_document(path)
    assert doc.source == str(path) and doc.metadata["format"] == ext.lstrip(".")
    assert kinds <= {b.kind for b in doc.blocks}
    for text in present:
        assert text in doc.text, text
    for text in absent:
        assert text not in doc.text, text
    _check_offsets(doc)


def test_markdown_structure(tmp_path):
    (path := tmp_path / "a.md").write_text(MARKDOWN)
    doc = load_document(path)
    assert doc.title == "Front Title"
    assert [(h.level, h.text) for h in doc.headings] == [(1, "Guide"), (2, "Install"),
                                                         (3, "Deep heading")]
    table = next(b for b in doc.blocks if b.kind == "table")
    assert table.rows == ["name | value", "alpha | 1", "beta | 2"]
    code = next(b for b in doc.blocks if b.kind == "code")
    assert code.text == '# not a heading\nprint("hi")'
    lists = [b.text for b in doc.blocks if b.kind == "list"]
    assert lists[0].splitlines()[:2] == ["1. Download the archive.", "2. Unpack it somewhere."]


def test_html_structure(tmp_path):
    (path := tmp_path / "a.html").write_text(HTML)
    doc = load_document(path)
    assert doc.title == "Page Title"
    assert [(h.level, h.text) for h in doc.headings] == [(1, "Main Heading"), (2, "Table")]
    table = next(b for b in doc.blocks if b.kind == "table")
    assert table.rows == ["Name | Role", "Ann | Dev", "Bob | Ops"]
    assert "- item a\n  - sub item\n- item b" in doc.text


def test_text_headings_and_title(tmp_path):
    (path := tmp_path / "a.txt").write_text(TEXT)
    doc = load_document(path)
    assert doc.title == "Project Handbook"
    assert [(h.level, h.text) for h in doc.headings] == [
        (0, "Project Handbook"), (2, "1.1. What is this?"), (1, "Setup notes")]


def test_docx_structure(tmp_path):
    _write_docx(path := tmp_path / "a.docx")
    doc = load_document(path)
    assert doc.title == "Handbook"
    assert [(h.level, h.text) for h in doc.headings] == [(0, "Handbook"), (1, "Setup"),
                                                         (2, "Details")]
    assert next(b for b in doc.blocks if b.kind == "table").rows == [
        "Key | Value", "port | 8080", "host | local"]


def test_pdf_pages_numbered(tmp_path):
    (path := tmp_path / "a.pdf").write_bytes(_tiny_pdf(["Alpha line.", "", "Gamma line."]))
    doc = load_document(path)
    assert [(b.page, b.text) for b in doc.blocks] == [(1, "Alpha line."), (3, "Gamma line.")]
    assert doc.metadata["pages"] == 3


@pytest.mark.parametrize("ext", [".json", ".jsonl"])
def test_json_text_field_and_skipped_records(tmp_path, ext):
    records = [{"body": {"text": "Nested one."}}, {"body": {"text": "Nested two."}}, {"x": 1}]
    path = tmp_path / f"r{ext}"
    path.write_text(json.dumps(records) if ext == ".json"
                    else "\n".join(json.dumps(r) for r in records))
    doc = load_document(path, text_field="body.text")
    assert [b.text for b in doc.blocks] == ["Nested one.", "Nested two."]
    assert doc.metadata["skipped_records"] == 1 and doc.metadata["records"] == 3
    with pytest.raises(UnreadableDocument, match="none of the 3 records"):
        load_document(path, text_field="missing")


@pytest.mark.parametrize("name,data,encoding,expected", [
    ("cp1252.txt", "caf\u00e9 au lait".encode("cp1252"), None, "caf\u00e9 au lait"),
    ("latin.txt", "caf\u00e9".encode("latin-1"), "latin-1", "caf\u00e9"),
    ("utf16.txt", "caf\u00e9".encode("utf-16"), None, "caf\u00e9"),
    ("bom.csv", "name\ncaf\u00e9\n".encode("utf-8-sig"), None, "name: caf\u00e9"),
    ("nometa.html", "<p>caf\u00e9</p>".encode("cp1252"), None, "caf\u00e9"),
    ("meta.html", '<meta charset="iso-8859-1"><p>caf\u00e9</p>'.encode("latin-1"), None,
     "caf\u00e9"),
    ("asked.html", "<p>caf\u00e9</p>".encode("latin-1"), "latin-1", "caf\u00e9"),
])
def test_text_encodings(tmp_path, name, data, encoding, expected):
    (path := tmp_path / name).write_bytes(data)
    assert load_document(path, encoding=encoding).text == expected


def test_wrong_encoding_is_reported(tmp_path):
    (path := tmp_path / "a.txt").write_bytes("caf\u00e9".encode("cp1252"))
    with pytest.raises(UnreadableDocument, match="cannot decode as utf-8"):
        load_document(path, encoding="utf-8")


def _corrupt_inputs(tmp: Path) -> dict[str, Path]:
    junk = os.urandom(4096)
    files = {
        "random bytes .pdf": ("junk.pdf", junk),
        "a .docx that is not a zip": ("fake.docx", b"just some text, not a zip archive"),
        "an unknown extension": ("data.xyz", b"hello"),
        "an empty file": ("empty.txt", b""),
        "binary junk as .txt": ("junk.txt", b"\x00\x01\x02" + junk),
        "binary junk as .html": ("junk.html", b"\x00" + junk),
        "a .jsonl with a bad line": ("bad.jsonl", b'{"text": "ok"}\n{"text": oops}\n'),
        "a .json that is not JSON": ("bad.json", b"{not json"),
        "a .md with only blank lines": ("blank.md", b"\n\n   \n"),
        "a PDF without a text layer": ("scan.pdf", _tiny_pdf([""])),
    }
    out = {}
    for label, (name, data) in files.items():
        (tmp / name).write_bytes(data)
        out[label] = tmp / name
    return out


def test_corrupt_inputs_raise_unreadable_naming_the_file(tmp_path):
    for label, path in _corrupt_inputs(tmp_path).items():
        with pytest.raises(UnreadableDocument) as info:
            load_document(path)
        err = info.value
        assert isinstance(err, InvalidRequest) and err.code == "unreadable_document", label
        assert str(path) in err.message and err.path == str(path), label
        assert len(err.reason) > 5, label
    with pytest.raises(UnreadableDocument, match="line 2"):
        load_document(tmp_path / "bad.jsonl")
    with pytest.raises(UnreadableDocument, match="unsupported format"):
        load_document(tmp_path / "data.xyz")
    with pytest.raises(UnreadableDocument, match="no text layer"):
        load_document(tmp_path / "scan.pdf")
    with pytest.raises(UnreadableDocument, match="no such file"):
        load_document(tmp_path / "missing.txt")


def test_load_many_goes_past_failures(tmp_path):
    bad = list(_corrupt_inputs(tmp_path).values())
    (good1 := tmp_path / "g1.md").write_text(MARKDOWN)
    (good2 := tmp_path / "g2.html").write_text(HTML)
    results = list(load_many([good1, *bad, good2]))
    assert len(results) == len(bad) + 2
    assert isinstance(results[0], Document) and isinstance(results[-1], Document)
    failures = results[1:-1]
    assert all(isinstance(f, LoadFailure) for f in failures)
    assert [f.path for f in failures] == [str(p) for p in bad]
    assert all(f.path in f.message and f.code == "unreadable_document" for f in failures)


# --- the real Debian FAQ ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def faq_pdf() -> Document:
    return load_document(CORPORA / "debian-faq.pdf")


@needs_corpora
def test_debian_faq_text():
    doc = load_document(CORPORA / "debian-faq.txt")
    _check_offsets(doc)
    assert doc.title == "The Debian GNU/Linux FAQ"
    by_level: dict[int, list[str]] = {}
    for h in doc.headings:
        by_level.setdefault(h.level, []).append(h.text)
    assert len(by_level[1]) == 16 and by_level[1][0] == "Chapter 1. Definitions and overview"
    assert len(by_level[2]) == 112  # the FAQ's 112 numbered questions
    assert "3.2. But what about Knoppix, Linux Mint Debian Edition, Ubuntu, and others?" \
        in by_level[2]
    assert "3.1.1. You asked me to install stable, but in stable so and so hardware is not " \
           "detected/working. What should I do?" in by_level[3]
    assert "\u00a0" not in doc.text and "-----" not in doc.text


@needs_corpora
@pytest.mark.filterwarnings("ignore::bs4.XMLParsedAsHTMLWarning")
def test_debian_faq_html_pages():
    from bs4 import BeautifulSoup

    pages = sorted((CORPORA / "debian-faq-html").glob("*.html"))
    assert len(pages) >= 10
    docs = list(load_many(pages))
    assert not [d for d in docs if isinstance(d, LoadFailure)]
    for path, doc in zip(pages, docs):
        _check_offsets(doc)
        assert doc.headings and doc.title, path.name
        assert "background-repeat" not in doc.text  # the inline <style>
        raw = BeautifulSoup(path.read_bytes(), "lxml")
        nav = [" ".join(td.get_text().split()) for td in raw.select(".navfooter td")]
        for phrase in nav:  # the previous/next chapter names shown only in the nav bar
            if phrase.startswith("Chapter") and phrase != doc.title:
                assert phrase not in doc.text, (path.name, phrase)
    basic = docs[[p.name for p in pages].index("basic-defs.en.html")]
    assert [h.text for h in basic.headings][:2] == ["Chapter 1. Definitions and overview",
                                                    "1.1. What is this FAQ?"]
    assert "Chapter 2. Getting and installing Debian GNU/Linux" not in basic.text
    assert sum(len(d.headings) for d in docs) == 165  # as many as the text version


@needs_corpora
def test_debian_faq_pdf(faq_pdf):
    doc = faq_pdf
    _check_offsets(doc)
    assert doc.title == "The Debian GNU/Linux FAQ"
    assert doc.metadata["pages"] == 73 and len(doc.pages) > 50 and doc.pages[0] == 1
    assert all(b.page is not None for b in doc.blocks)
    # word gaps are spaces, not glued words
    assert "This document answers questions frequently asked about Debian GNU/Linux." in doc.text
    hits = [(b.kind, b.page) for b in doc.blocks
            if "7.13 How do I install a source package?" in b.text]
    assert hits == [("heading", 40)]  # the contents pages (3-6) are gone, the heading is found
    assert doc.metadata["toc_pages"] == [3, 4, 5, 6]
    levels: dict[int, list[str]] = {}
    for h in doc.headings:
        levels.setdefault(h.level, []).append(h.text)
    assert len(levels[2]) == 112  # the FAQ's 112 numbered questions, from font size + outline
    assert "Chapter 1. Definitions and overview" in levels[1]
    assert "1.2 What is Debian GNU/Linux?" in levels[2]
    # running headers ("CHAPTER 7. BASICS OF THE DEBIAN PACKAGE...") are not text
    assert not any(b.text.startswith("CHAPTER ") for b in doc.blocks)
    page40 = " ".join(b.text for b in doc.blocks if b.page == 40)
    assert "Debian source packages can\u2019t actually be" in page40
    assert not re.search(r"[a-z]{40,}", doc.text)


def _styled_pdf(pages: list[list[tuple[str, int, bool]]], outline: list[tuple[str, int]] = ()
                ) -> bytes:
    """A PDF whose lines have their own size and weight: (text, points, bold) per line."""
    from pypdf import PdfWriter

    from io import BytesIO

    raw = _tiny_pdf(["x"] * len(pages))
    writer = PdfWriter(clone_from=BytesIO(raw))
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    bold = DictionaryObject({NameObject("/Type"): NameObject("/Font"),
                             NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica-Bold")})
    for page, lines in zip(writer.pages, pages):
        ops, y = ["BT"], 740
        for text, size, is_bold in lines:
            ops.append(f"/{'F2' if is_bold else 'F1'} {size} Tf 1 0 0 1 72 {y} Tm ({text}) Tj")
            y -= size + 6
        ops.append("ET")
        stream = DecodedStreamObject()
        stream.set_data("\n".join(ops).encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
        page["/Resources"]["/Font"][NameObject("/F2")] = writer._add_object(bold)
    for title, number in outline:
        writer.add_outline_item(title=title, page_number=number)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


BODY = "This sentence is ordinary body text of the manual and runs long enough."


def test_pdf_headings_from_font_size_running_headers_and_contents_dropped(tmp_path):
    header = ("ACME ROUTER MANUAL", 9, False)
    pages = [[("Contents", 18, True), ("1 Setup . . . . . . . . 2", 12, False),
              ("1.1 Power . . . . . . . . 2", 12, False), ("2 Reset . . . . . . . . 3", 12, False)],
             [header, ("1 Setup", 18, True), (BODY, 12, False), ("1.1 Power", 14, True),
              ("The X300 needs a 12 V adapter.", 12, False), ("2", 12, False)],
             [header, ("2 Reset", 18, True), ("Hold reset for 8 seconds.", 12, False),
              (BODY, 12, False), ("3", 12, False)],
             [header, ("Appendix notes", 12, True), (BODY, 12, False), ("4", 12, False)]]
    path = tmp_path / "manual.pdf"
    path.write_bytes(_styled_pdf(pages, outline=[("Appendix notes", 3)]))
    doc = load_document(path)
    _check_offsets(doc)
    assert doc.metadata["toc_pages"] == [1]
    assert [(h.text, h.level, h.page) for h in doc.headings] == [
        ("1 Setup", 1, 2), ("1.1 Power", 2, 2), ("2 Reset", 1, 3), ("Appendix notes", 1, 4)]
    assert "ACME ROUTER MANUAL" not in doc.text and ". . . ." not in doc.text
    assert not re.search(r"(?m)^\d$", doc.text)  # page numbers


def test_tables_of_contents_are_dropped_from_text_formats(tmp_path):
    toc = ("Table of Contents\n\n1. Setup\n    1.1. Power adapters\n    1.2. Which cable?\n"
           "2. Reset\n    2.1. How do I reset it?\n\n")
    body = ("1.1. Power adapters\n\nThe X300 needs a 12 V adapter.\n\n"
            "2.1. How do I reset it?\n\nHold the button for 8 seconds.\n")
    (path := tmp_path / "manual.txt").write_text("Manual\n\n" + toc + body)
    doc = load_document(path)
    _check_offsets(doc)
    assert "Table of Contents" not in doc.text and "Which cable?" not in doc.text
    assert doc.text.count("How do I reset it?") == 1 and doc.metadata["dropped_blocks"] == 2
    # a real numbered procedure (sentences) is content, not a table of contents
    steps = "Steps\n\n1.1. Unplug the router.\n1.2. Wait ten seconds.\n1.3. Plug it in again.\n"
    (p2 := tmp_path / "steps.txt").write_text(steps)
    assert "Wait ten seconds." in load_document(p2).text
