"""Grounded answers: retrieved chunks go into the prompt within a token budget, as quoted data
the model is told to use and not to obey; the answer's citations are mapped to sources and each
cited sentence is checked against its chunk.

Abstention (``rag.calibration``): a base that learned its threshold (``afinar kb calibrate``)
answers ``NOTHING_FOUND`` when the best hit's dense similarity is below it, instead of letting the
model guess from weak sources; a base without one keeps the constant ``THRESHOLD`` on the hits.

Citation checking is lexical (content-word overlap between the sentence and the cited chunk): no
entailment model can be had offline here. A sentence whose overlap is below ``SUPPORT`` is flagged
as unsupported, and so is a citation of a source number that was never given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from afinar.models.generation import GenerationResult, Generator, SamplingParams
from afinar.models.loader import LoadedModel
from afinar.rag.calibration import best_dense, threshold_of
from afinar.rag.kb import KnowledgeBases
from afinar.rag.layouts import DEFAULT_LAYOUT, INSTRUCTIONS, LAYOUTS, source_block
from afinar.rag.search import Hit

SUPPORT = 0.5
THRESHOLD = 0.3  # the minimum cosine of a source for a base without a learned threshold
NOTHING_FOUND = ("I could not find this in the knowledge base, so I will not guess. Try other "
                 "words, or add the documents that cover it.")
SYSTEM = INSTRUCTIONS  # the grounded answer's instructions, one copy (rag.layouts)
_WORD = re.compile(r"[A-Za-z0-9]+")
_STOP = set("""a an the and or of to in on for with is are was were be been it its this that
these those as at by from how what which who why when where do does did can could should would
you your i we they he she them our not no yes if then than so such into about over also may
will just""".split())
_CITE = re.compile(r"\[(\d{1,2})\]")
_SENT = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Citation:
    number: int
    source: str | None
    chunk_id: int | None
    pages: list[int]
    start: int | None
    end: int | None
    sentence: str
    support: float
    supported: bool
    inferred: bool = False  # attributed after the fact: the model gave no marker


@dataclass
class Answer:
    text: str
    sources: list[Hit]
    citations: list[Citation] = field(default_factory=list)
    found: bool = True
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def unsupported(self) -> list[Citation]:
        return [c for c in self.citations if not c.supported]


def content_words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP and len(w) > 1}


def chunk_body(text: str, heading_path: list[str] | None) -> str:
    """A chunk's text without its heading-path line (``chunking.py`` puts "Guide > Wi-Fi" on
    the first line): headings say where a passage is, so a sentence that only repeats them is
    not supported by it."""
    if not heading_path:
        return text
    first, sep, rest = text.partition("\n")
    if sep and content_words(first) <= content_words(" ".join(heading_path)):
        return rest
    return text


def support(sentence: str, chunk: str, heading_path: list[str] | None = None) -> float:
    """Share of the sentence's content words found in the chunk's body (its heading path
    excluded)."""
    words = content_words(_CITE.sub("", sentence))
    body = content_words(chunk_body(chunk, heading_path))
    return len(words & body) / len(words) if words else 0.0


def build_messages(question: str, hits: list[Hit], lm: LoadedModel, answer_tokens: int,
                   system: str | None = None, layout: str | None = None
                   ) -> tuple[list[dict], list[Hit]]:
    """The prompt, laid out by ``layout`` (``rag.layouts``; default ``DEFAULT_LAYOUT``), with as
    many sources as fit: context - instructions and question - answer allowance."""
    from afinar.models.templates import render_ids

    tok = lm.tokenizer
    lay = LAYOUTS.get(layout or DEFAULT_LAYOUT)
    base = [{"role": "system", "content": system or SYSTEM}, {"role": "user", "content": question}]
    used = len(render_ids(tok, lay(base, [], "")))
    budget = lm.context_length - answer_tokens - used - 8
    if budget <= 0:
        from afinar.errors import ContextLengthExceeded

        raise ContextLengthExceeded(
            f"the instructions and question take {used} of the model's {lm.context_length} "
            f"tokens and the answer needs {answer_tokens}: no room is left for sources",
            param="messages")
    kept: list[Hit] = []
    for h in hits:
        block = source_block(len(kept) + 1, h.source, h.text)
        n = len(tok(block + "\n\n", add_special_tokens=False)["input_ids"]) + 1
        if n > budget:
            break
        budget -= n
        kept.append(h)
    return lay(base, [(h.source, h.text) for h in kept], ""), kept


def cite(text: str, sources: list[Hit]) -> list[Citation]:
    out: list[Citation] = []
    for sent in (s for s in _SENT.split(text) if s.strip()):
        numbers = [int(n) for n in _CITE.findall(sent)]
        for n in numbers:
            if 1 <= n <= len(sources):
                h = sources[n - 1]
                sc = support(sent, h.text, getattr(h, "heading_path", None))
                out.append(Citation(n, h.source, h.chunk_id, h.pages, h.start, h.end, sent, sc,
                                    sc >= SUPPORT))
            else:  # a source that was never given: an invented citation
                out.append(Citation(n, None, None, [], None, None, sent, 0.0, False))
        if not numbers and sources and content_words(sent):
            scores = [support(sent, h.text, getattr(h, "heading_path", None))
                      for h in sources]
            best = max(range(len(sources)), key=lambda i: scores[i])
            if scores[best] >= SUPPORT:
                h = sources[best]
                out.append(Citation(best + 1, h.source, h.chunk_id, h.pages, h.start, h.end, sent,
                                    scores[best], True, inferred=True))
    return out


def sources_for(kbs: KnowledgeBases, kb: str, question: str, *, groups=(), k: int = 5,
                score_threshold: float | None = None, reranker=None) -> list[Hit]:
    """The sources an answer is grounded on, ``[]`` to abstain (retrieval only: no model
    runs). ``score_threshold``: the minimum cosine of a source; ``None``: the base's learned
    threshold when it has one (the best hit below it: abstain), else ``THRESHOLD``."""
    learned = threshold_of(kbs, kb) if score_threshold is None else None
    floor = THRESHOLD if score_threshold is None and learned is None else score_threshold
    hits = kbs.search(kb, question, groups=groups, k=k, score_threshold=floor or 0.0,
                      reranker=reranker)
    best = best_dense(hits)
    if learned is not None and best is not None and best < learned:
        return []  # the best source is weak for this base: say so instead of guessing
    return hits


def ask(question: str, lm: LoadedModel, kb: str, *, groups=(), k: int = 5,
        score_threshold: float | None = None, params: SamplingParams | None = None,
        kbs: KnowledgeBases | None = None, memories: list[str] | None = None,
        system: str | None = None, reranker=None) -> Answer:
    """A grounded answer, or ``NOTHING_FOUND`` (``found=False``) when ``sources_for`` abstains
    and there are no memories."""
    kbs = kbs or KnowledgeBases()
    params = params or SamplingParams(temperature=0, max_tokens=256)
    hits = sources_for(kbs, kb, question, groups=groups, k=k, score_threshold=score_threshold,
                       reranker=reranker)
    if not hits and not memories:
        return Answer(NOTHING_FOUND, [], [], found=False)
    system = system or SYSTEM
    if memories:
        system += "\n\nWhat you know about this user:\n" + "\n".join(f"- {m}" for m in memories)
    messages, kept = build_messages(question, hits, lm, params.max_tokens or 256, system)
    r: GenerationResult = Generator(lm).chat(messages, params)
    return Answer(r.text, kept, cite(r.text, kept), True,
                  {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens})
