"""HTML (.html, .htm) with BeautifulSoup + lxml: the main text, its headings, lists, tables, code.

Boilerplate is removed first: script, style, noscript, template, nav, aside, form and the like;
``header``/``footer`` outside an article or section; anything hidden; anything whose role is
navigation, banner, contentinfo, search or complementary; and anything whose class or id names
navigation (``nav*``, ``menu``, ``breadcrumb``, ``sidebar``, ``toc``...), such as DocBook's
``navheader``/``navfooter`` tables and per-page tables of contents (an element holding the page's
``main``, ``article`` or ``h1`` is kept whatever its class).

The walk then starts at ``<main>``, ``[role=main]`` or a single ``<article>`` when the page has one,
else at ``<body>``: h1-h6 become headings with their level, ``<pre>`` a code block, data tables a
table block (one row per line, cells joined with " | ", header row first; a table holding
paragraphs or lists is treated as layout and walked), ``ul``/``ol`` a list block (one item per
line, nesting kept as indentation), ``dl`` a list of "term: definition" lines, and the inline text
between blocks a paragraph. The title is ``<title>``, else the first h1. Bytes are decoded with
the encoding asked for, else the declared one (meta charset, XML declaration), else UTF-8, else
cp1252.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from bs4 import (
    BeautifulSoup,
    Comment,
    Declaration,
    Doctype,
    NavigableString,
    ProcessingInstruction,
    Tag,
    XMLParsedAsHTMLWarning,
)
from bs4.dammit import EncodingDetector

from afinar.rag.document import Document, DocumentBuilder
from afinar.rag.loaders.base import (
    LoadOptions,
    UnreadableDocument,
    looks_binary,
    normalize_spaces,
    register,
)

_DROP_TAGS = ["script", "style", "noscript", "template", "nav", "aside", "form", "iframe", "svg",
              "button", "select", "textarea", "object", "embed", "canvas", "dialog", "head"]
_DROP_ROLES = {"navigation", "banner", "contentinfo", "search", "complementary", "menu",
               "menubar"}
_DROP_NAMES = {"menu", "breadcrumb", "breadcrumbs", "sidebar", "toc", "skip-link", "skiplink",
               "cookie-banner", "pagination"}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_BLOCKS = _HEADINGS | {"p", "div", "section", "article", "main", "blockquote", "figure",
                       "figcaption", "address", "details", "summary", "center", "body", "html",
                       "pre", "table", "ul", "ol", "dl", "li", "dd", "dt", "hr", "header",
                       "footer", "fieldset", "caption", "tbody", "thead", "tr", "td", "th"}
_LAYOUT_MARKERS = ["p", "ul", "ol", "dl", "pre", "table", "div"] + sorted(_HEADINGS)
_NOT_TEXT = (Comment, Declaration, Doctype, ProcessingInstruction)


@register(".html", ".htm", ".xhtml")
def load_html(path: Path, options: LoadOptions) -> Document:
    data = path.read_bytes()
    if looks_binary(data):
        raise UnreadableDocument(path, "binary content, not HTML")
    return parse_html(_decode(path, data, options.encoding), source=str(path))


def _decode(path: Path, data: bytes, encoding: str | None) -> str:
    """Decode as the module docstring says (no statistical guessing: it mislabels short pages)."""
    declared = EncodingDetector.find_declared_encoding(data, is_html=True)
    for codec in filter(None, [encoding, declared]):
        try:
            return data.decode(codec, errors="replace" if codec == declared else "strict")
        except LookupError:
            if codec == encoding:
                raise UnreadableDocument(path, f"unknown encoding {codec!r}") from None
        except UnicodeDecodeError as exc:
            raise UnreadableDocument(path, f"cannot decode as {codec}: {exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def parse_html(markup: str, *, source: str = "<html>") -> Document:
    """Extract the main text of ``markup`` as blocks (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(markup, "lxml")
    title_tag = soup.find("title")
    title = normalize_spaces(title_tag.get_text()) if title_tag else None
    _strip_boilerplate(soup)
    root = soup.find("main") or soup.find(attrs={"role": "main"})
    if root is None:
        articles = soup.find_all("article")
        root = articles[0] if len(articles) == 1 else (soup.body or soup)
    walker = _Walker(DocumentBuilder(source))
    walker.walk(root)
    walker.flush()
    builder = walker.builder
    if not title:
        title = next((b.text for b in builder.blocks if b.kind == "heading" and b.level == 1),
                     None)
    return builder.build(title=title)


def _strip_boilerplate(soup: BeautifulSoup) -> None:
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(["header", "footer"]):
        if tag.find_parent(["article", "section", "main"]) is None:
            tag.decompose()
    for tag in soup.find_all(True):
        if tag.decomposed or tag.attrs is None:
            continue
        if _is_boilerplate(tag):
            tag.decompose()


def _is_boilerplate(tag: Tag) -> bool:
    if tag.name in ("html", "body", "main"):
        return False
    if tag.has_attr("hidden") or tag.get("aria-hidden") == "true":
        return True
    style = re.sub(r"\s+", "", str(tag.get("style", ""))).lower()
    if "display:none" in style or "visibility:hidden" in style:
        return True
    if str(tag.get("role", "")).lower() in _DROP_ROLES:
        return True
    names = [c.lower() for c in tag.get("class") or []] + [str(tag.get("id", "")).lower()]
    if not any(n in _DROP_NAMES or n.startswith("nav") for n in names if n):
        return False
    return tag.find(["main", "article", "h1"]) is None  # a wrapper around the content stays


class _Walker:
    """Depth-first walk that turns block elements into blocks and buffers inline text."""

    def __init__(self, builder: DocumentBuilder):
        self.builder = builder
        self.inline: list[str] = []

    def flush(self) -> None:
        text = normalize_spaces("".join(self.inline))
        self.inline.clear()
        if text:
            self.builder.add("paragraph", text)

    def walk(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, _NOT_TEXT):
                continue
            if isinstance(child, NavigableString):
                self.inline.append(str(child))
            elif isinstance(child, Tag):
                self.element(child)

    def element(self, tag: Tag) -> None:
        name = tag.name
        if name == "br":
            self.inline.append(" ")
        elif name in _HEADINGS:
            self.flush()
            self.builder.add("heading", _text(tag), level=int(name[1]))
        elif name == "pre":
            self.flush()
            self.builder.add("code", tag.get_text())
        elif name == "table" and not tag.find(_LAYOUT_MARKERS):
            self.flush()
            self.builder.add("table", "", rows=_table_rows(tag))
        elif name in ("ul", "ol"):
            self.flush()
            self.builder.add("list", "\n".join(_list_lines(tag, 0)))
        elif name == "dl":
            self.flush()
            self.builder.add("list", "\n".join(_definition_lines(tag)))
        elif name == "img":
            return
        elif name in _BLOCKS or tag.find(list(_BLOCKS)) is not None:
            self.flush()
            self.walk(tag)
            self.flush()
        else:  # inline element: its text joins the current paragraph
            self.inline.append(tag.get_text())


def _table_rows(table: Tag) -> list[str]:
    rows = []
    header = None
    for tr in table.find_all("tr"):
        if tr.find_parent("table") is not table:
            continue
        cells = [_text(c) for c in tr.find_all(["th", "td"], recursive=False)]
        if not any(cells):
            continue
        row = " | ".join(cells)
        is_header = tr.find_parent("thead") is not None or all(
            c.name == "th" for c in tr.find_all(["th", "td"], recursive=False))
        if header is None and is_header:
            header = row
        else:
            rows.append(row)
    return ([header] if header else []) + rows


def _list_lines(lst: Tag, depth: int) -> list[str]:
    lines = []
    ordered = lst.name == "ol"
    for n, li in enumerate(lst.find_all("li", recursive=False), start=1):
        text = _text(li, skip=("ul", "ol"))
        if text:
            lines.append("  " * depth + (f"{n}. " if ordered else "- ") + text)
        for sub in li.find_all(["ul", "ol"]):
            if sub.find_parent(["ul", "ol"]) is lst:
                lines.extend(_list_lines(sub, depth + 1))
    return lines


def _definition_lines(dl: Tag) -> list[str]:
    lines: list[str] = []
    term = None
    for child in dl.find_all(["dt", "dd"]):
        if child.find_parent("dl") is not dl:
            continue
        text = _text(child)
        if child.name == "dt":
            if term:
                lines.append(f"- {term}")
            term = text
        elif text:
            lines.append(f"- {term}: {text}" if term else f"- {text}")
            term = None
    if term:
        lines.append(f"- {term}")
    return lines


def _text(node: Tag, skip: tuple[str, ...] = ()) -> str:
    """The text of ``node`` with whitespace collapsed: inline elements join their neighbours,
    block elements and ``<br>`` are separated by a space; subtrees named in ``skip`` are left out.
    """
    parts: list[str] = []

    def collect(tag: Tag) -> None:
        for child in tag.children:
            if isinstance(child, _NOT_TEXT):
                continue
            if isinstance(child, NavigableString):
                parts.append(str(child))
            elif isinstance(child, Tag) and child.name not in skip:
                spaced = child.name in _BLOCKS or child.name == "br"
                parts.append(" " if spaced else "")
                collect(child)
                parts.append(" " if spaced else "")

    collect(node)
    return normalize_spaces("".join(parts))
