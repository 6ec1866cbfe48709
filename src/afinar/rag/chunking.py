"""Chunking by tokens of the embedding model, structure-aware by default, with overlap.

Sizes follow OpenAI's ``chunking_strategy`` (``static``: ``max_chunk_size_tokens`` 100..4096,
default 800, ``chunk_overlap_tokens`` default 400 and at most half the max); ``auto`` fits the
embedding model's window (``resolve_sizes``).

``chunk_document(structure=True)`` cuts at headings, and no chunk crosses one. A chunk's ``text``
is its heading path ("FAQ > Installing > 3.2 ...", document title first) on one line, then its
``body``; the whole text stays within ``max_tokens``. Bodies are packed from units never cut:
sentences, list items, table rows, code lines. A table, code block or list that fits in a chunk
is kept whole; a longer one is split between rows or lines, and each table chunk starts with the
header row. Only a unit longer than a chunk is cut, between words (a giant word by halves), so
no chunk exceeds ``max_tokens``. A chunk closed for size hands its last ``overlap`` tokens of
whole units to the next chunk of its section, never across a heading. ``doc.text[start:end]`` is
the body (without a repeated table header); ``pages`` are the pages of its units.
``structure=False``: plain windows over the whole text, same units and overlap, no path.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from afinar.errors import InvalidRequest
from afinar.rag.document import Block, Document

TokenCounter = Callable[[str], int]
PATH_SEPARATOR = " > "
# the end of a sentence: . ! ? or …, closing quotes/brackets, spaces, then a capital or digit
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*(\s+)"
                           r"(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
_KEEP_WHOLE = ("table", "code", "list")
AUTO_RESERVED_TOKENS = 16  # auto: [CLS]/[SEP] and a margin (the heading path is inside max)


def _invalid(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid 'chunking_strategy{field}': {message}",
                          param="chunking_strategy")


class StaticChunking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_chunk_size_tokens: int = 800
    chunk_overlap_tokens: int = 400


class ChunkingStrategy(BaseModel):
    """OpenAI's ``{"type": "auto"}`` or ``{"type": "static", "static": {...}}``; bad values raise
    ``InvalidRequest`` (param ``chunking_strategy``), as does ``parse`` for malformed input."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["auto", "static"] = "auto"
    static: StaticChunking | None = None

    @classmethod
    def parse(cls, value: Any) -> ChunkingStrategy:
        """Validate a request's ``chunking_strategy`` (None means auto)."""
        if isinstance(value, cls):
            return value
        try:
            return cls.model_validate({"type": "auto"} if value is None else value)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = "".join(f".{part}" for part in error["loc"])
            raise _invalid(where, error["msg"]) from None

    @model_validator(mode="after")
    def _check(self) -> ChunkingStrategy:
        if self.type == "auto":
            if self.static is not None:
                raise _invalid(".static", "only allowed when type is 'static'")
            return self
        self.static = self.static or StaticChunking()
        size, overlap = self.static.max_chunk_size_tokens, self.static.chunk_overlap_tokens
        if not 100 <= size <= 4096:
            raise _invalid(".static.max_chunk_size_tokens", f"must be 100..4096, got {size}")
        if not 0 <= overlap <= size / 2:
            raise _invalid(".static.chunk_overlap_tokens", "must be >= 0 and at most half of "
                           f"max_chunk_size_tokens ({size // 2}), got {overlap}")
        return self


class ChunkSizes(NamedTuple):
    max_tokens: int
    overlap_tokens: int
    exceeds_window: bool  # static chunks longer than the model reads: the excess is not embedded


def resolve_sizes(strategy: ChunkingStrategy | dict | None,
                  model_max_tokens: int | None) -> ChunkSizes:
    """Concrete sizes for a strategy and an embedding model's window (in tokens).

    ``auto``: ``max = min(800, window - 16)`` and ``overlap = max // 4``, so 240/60 for
    all-MiniLM's 256 word pieces and 800/200 from a window of 816 up; OpenAI's 800/400 when the
    window is unknown. ``static`` is honoured as given; ``exceeds_window`` says a chunk may be
    longer than the window less the two special tokens.
    """
    strategy = ChunkingStrategy.parse(strategy)
    if strategy.type == "static":
        size, overlap = strategy.static.max_chunk_size_tokens, strategy.static.chunk_overlap_tokens
        return ChunkSizes(size, overlap, model_max_tokens is not None
                          and size > model_max_tokens - 2)
    if model_max_tokens is None:
        return ChunkSizes(800, 400, False)
    size = max(16, min(800, model_max_tokens - AUTO_RESERVED_TOKENS))
    return ChunkSizes(size, size // 4, False)


@dataclass
class Chunk:
    text: str  # heading path line + body: what gets embedded and indexed
    body: str
    heading_path: list[str]
    start: int
    end: int
    pages: list[int]
    index: int
    n_tokens: int


@dataclass
class _Unit:
    """An uncuttable span of ``Document.text`` (sentence, item, row, line) and its token count."""

    start: int
    end: int
    tokens: int
    page: int | None
    header: tuple[str, int] | None = None  # a table row's header (text, tokens), to repeat


def chunk_document(doc: Document, count_tokens: TokenCounter, max_tokens: int, overlap: int,
                   structure: bool = True) -> list[Chunk]:
    """Cut ``doc`` into chunks of at most ``max_tokens`` tokens (see the module docstring)."""
    if max_tokens < 8 or overlap < 0:
        raise ValueError(f"max_tokens must be >= 8 and overlap >= 0, got {max_tokens}/{overlap}")
    overlap = min(overlap, max_tokens // 2)
    chunks: list[Chunk] = []
    if not structure:
        _Packer(doc, count_tokens, max_tokens, overlap, [], chunks, structure=False).pack(
            doc.blocks)
        return chunks
    stack: list[Block] = []
    section: list[Block] = []
    for block in doc.blocks + [Block("heading", "", level=-1)]:  # a sentinel closes the last
        if block.kind != "heading":
            section.append(block)
            continue
        if section:
            path = [h.text for h in stack]
            if doc.title and (not path or path[0] != doc.title):
                path.insert(0, doc.title)
            _Packer(doc, count_tokens, max_tokens, overlap, path, chunks).pack(section)
            section = []
        while stack and stack[-1].level >= block.level:
            stack.pop()
        stack.append(block)
    return chunks


class _Packer:
    """Packs one section's units greedily into chunks, appending them to ``out``."""

    def __init__(self, doc: Document, count: TokenCounter, max_tokens: int, overlap: int,
                 path: list[str], out: list[Chunk], structure: bool = True):
        self.doc, self.count, self.max_tokens, self.overlap = doc, count, max_tokens, overlap
        self.path, self.out, self.structure = path, out, structure
        # What joining two texts with a newline costs (0 for WordPiece, 1 for byte-level BPE).
        self.sep = max(0, count("a\nb") - count("a") - count("b"))
        self.path_line, path_tokens = _fit_path(path, count, max_tokens // 2)
        self.budget = max_tokens - (path_tokens + self.sep if self.path_line else 0)
        self.piece = max(8, overlap // 2) if overlap else None  # size of word runs, when cut

    def pack(self, blocks: list[Block]) -> None:
        units: list[_Unit] = []
        whole_at: dict[int, int] = {}  # first unit of a keep-whole block -> the block's tokens
        for block in blocks:
            block_units = self._units(block)
            if self.structure and block.kind in _KEEP_WHOLE and len(block_units) > 1:
                whole_at[len(units)] = sum(u.tokens for u in block_units)
            units.extend(block_units)
        current: list[_Unit] = []
        for i, unit in enumerate(units):
            need = whole_at.get(i, unit.tokens)
            if need > self.budget:  # too long to keep whole anyway: fill the current chunk
                need = unit.tokens
            if current and self._cost(current) + need > self.budget:
                self._emit(current)
                current = self._overlap_tail(current, unit, need)
            current.append(unit)
        if current:
            self._emit(current)

    def _units(self, block: Block) -> list[_Unit]:
        """A block's uncuttable units; one too long for a chunk is cut between words."""
        if block.kind in ("table", "code", "list"):
            spans = _line_spans(block.text, keep_indent=block.kind == "code")
        else:
            spans = _sentence_spans(block.text)
        header = None
        if block.kind == "table" and self.structure and len(spans) > 1:
            text = block.text[spans[0][0]:spans[0][1]]
            tokens = self.count(text) + self.sep
            header = (text, tokens) if tokens <= self.budget // 2 else None
        units = []
        for n, (s, e) in enumerate(spans):
            row_header = header if n else None
            limit = self.budget - (row_header[1] if row_header else 0) - self.sep
            for us, ue, tokens in _fit_span(self.doc.text, block.start + s, block.start + e,
                                            self.count, limit, block.kind, self.piece):
                units.append(_Unit(us, ue, tokens + self.sep, block.page, row_header))
        return units

    def _cost(self, units: list[_Unit]) -> int:
        header = units[0].header[1] if units and units[0].header else 0
        return header + sum(u.tokens for u in units)

    def _overlap_tail(self, previous: list[_Unit], nxt: _Unit, need: int) -> list[_Unit]:
        """The last whole units of ``previous``, worth at most ``overlap`` tokens, that leave
        room for ``need`` tokens starting with ``nxt`` (and a repeated table header)."""
        tail: list[_Unit] = []
        for unit in reversed(previous):
            candidate = [unit] + tail
            if sum(u.tokens for u in candidate) > self.overlap or \
                    self._cost(candidate + [nxt]) - nxt.tokens + need > self.budget:
                break
            tail = candidate
        return tail

    def _emit(self, units: list[_Unit]) -> None:
        """Append the chunk made of ``units``. Should the assembled text count more than
        ``max_tokens`` (a tokenizer that is not additive over whitespace), it is halved."""
        body = self.doc.text[units[0].start:units[-1].end]
        if units[0].header:
            body = units[0].header[0] + "\n" + body
        text = f"{self.path_line}\n{body}" if self.path_line else body
        n_tokens = self.count(text)
        if n_tokens > self.max_tokens:
            if len(units) > 1:
                self._emit(units[:len(units) // 2])
                self._emit(units[len(units) // 2:])
                return
            unit = units[0]
            parts = _fit_span(self.doc.text, unit.start, unit.end, self.count,
                              max(1, unit.tokens // 2), "code")
            if len(parts) > 1:
                for s, e, tokens in parts:
                    self._emit([_Unit(s, e, tokens, unit.page, unit.header)])
                return
        if not body.strip():
            return
        pages = sorted({u.page for u in units if u.page is not None})
        self.out.append(Chunk(text, body, list(self.path), units[0].start, units[-1].end, pages,
                              len(self.out), n_tokens))


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``, surrounding whitespace excluded."""
    cuts = [0] + [i for m in _SENTENCE_END.finditer(text) for i in m.span(1)] + [len(text)]
    return [(s + m.start(), s + m.end()) for s, e in zip(cuts[::2], cuts[1::2])
            if (m := re.search(r"\S(?:.*\S)?", text[s:e], re.DOTALL))]


def _line_spans(text: str, keep_indent: bool = False) -> list[tuple[int, int]]:
    """(start, end) of each non-blank line, without trailing (and, but for code, leading) spaces."""
    return [(m.start() if keep_indent else m.start(1), m.end(1))
            for m in re.finditer(r"^[ \t]*(\S[^\n]*?)[ \t]*$", text, re.MULTILINE)]


def _fit_span(text: str, s: int, e: int, count: TokenCounter, limit: int, kind: str,
              piece: int | None = None) -> list[tuple[int, int, int]]:
    """``text[s:e]`` as (start, end, tokens) parts of at most ``limit`` tokens: whole if it fits,
    else (list items) by sentences, else by runs of words of at most ``piece`` tokens (small
    enough for the overlap to carry some), and a word longer than ``limit`` by halves."""
    n = count(text[s:e])
    if n <= limit or e - s <= 1:
        return [(s, e, n)]
    if kind == "list":
        sentences = _sentence_spans(text[s:e])
        if len(sentences) > 1:
            return [part for a, b in sentences
                    for part in _fit_span(text, s + a, s + b, count, limit, "paragraph", piece)]
    cap = min(limit, piece or limit)
    words = [(s + m.start(), s + m.end()) for m in re.finditer(r"\S+", text[s:e])]
    if len(words) <= 1:
        mid = (s + e) // 2
        return _fit_span(text, s, mid, count, limit, kind) + \
            _fit_span(text, mid, e, count, limit, kind)
    parts: list[tuple[int, int, int]] = []
    start, end, total = None, None, 0
    for ws, we in words:
        wn = count(text[ws:we])
        if start is not None and total + wn > cap:
            parts.append((start, end, total))
            start = None
        if wn > limit:
            parts.extend(_fit_span(text, ws, we, count, limit, kind))
            continue
        if start is None:
            start, total = ws, 0
        end, total = we, total + wn
    if start is not None:
        parts.append((start, end, total))
    return parts


def _fit_path(path: list[str], count: TokenCounter, limit: int) -> tuple[str, int]:
    """The heading path line within ``limit`` tokens: middle levels dropped first, then the
    root, then the last words of the one heading left."""
    parts = [p for p in path if p]
    while parts:
        line = PATH_SEPARATOR.join(parts)
        if (n := count(line)) <= limit:
            return line, n
        if len(parts) > 1:
            del parts[1 if len(parts) > 2 else 0]
        elif len(words := line.split()) > 1:
            parts = [" ".join(words[:-1])]
        else:
            break
    return "", 0


@functools.lru_cache(maxsize=8)
def embedding_token_counter(model_path: str | os.PathLike) -> TokenCounter:
    """A cached token counter for an embedding model folder (sentence-transformers layout, with
    the tokenizer files at its top level): word pieces, special tokens not counted."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(os.fspath(model_path), local_files_only=True)

    @functools.lru_cache(maxsize=200_000)
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False, return_attention_mask=False,
                             return_token_type_ids=False, verbose=False)["input_ids"])

    return count
