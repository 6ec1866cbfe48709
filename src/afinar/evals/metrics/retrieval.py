"""Metrics on what a strategy retrieved: recall of the gold sources, citation support of the
answer's sentences."""

from __future__ import annotations

from types import SimpleNamespace

from afinar.evals.metrics.base import METRICS, Metric, Score


@METRICS.register()
class RetrievalRecall(Metric):
    name = "retrieval_recall"
    description = ("share of the case's gold sources among the top-k retrieved "
                   "(metadata.gold_sources)")

    def __init__(self, k: int | None = None):
        self.k = k

    def score(self, pred, case):
        gold = case.metadata.get("gold_sources")
        if not gold or pred.sources is None:
            return None
        got = {s["source"].rsplit("/", 1)[-1] for s in pred.sources[: self.k]}
        found = sum(g.rsplit("/", 1)[-1] in got for g in gold)
        return Score(found / len(gold), None if found == len(gold) else "gold not retrieved")


@METRICS.register()
class CitationSupport(Metric):
    """Share of the answer's sentences that a given source supports (``afinar.rag.answer.cite``:
    explicit [n] markers checked, unmarked sentences attributed to their best source; a source's
    heading path is not evidence, so repeating it supports nothing)."""

    name = "citation_support"
    description = "share of answer sentences supported by a retrieved source (grounded answers)"

    def score(self, pred, case):
        from afinar.rag.answer import _SENT, cite, content_words

        if not pred.sources:
            return None
        hits = [SimpleNamespace(source=s["source"], text=s["text"], chunk_id=s.get("chunk_id"),
                                heading_path=s.get("heading_path"), pages=[], start=None,
                                end=None) for s in pred.sources]
        sentences = [s for s in _SENT.split(pred.text) if content_words(s)]
        if not sentences:
            return Score(0.0, "empty answer")
        supported = {c.sentence for c in cite(pred.text, hits) if c.supported}
        n = sum(s in supported for s in sentences)
        return Score(n / len(sentences), None if n == len(sentences) else "unsupported sentence")
