"""Optional reranking of retrieved chunks, behind one small interface.

``CrossEncoderReranker`` scores (query, chunk) pairs with a sentence-transformers cross-encoder
folder (any local one; none ships with afinar, since no wheel carries one).
``OverlapReranker`` needs no model: it orders by the share of the query's content words that the
chunk contains, a cheap tie-breaker for keyword-heavy queries.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from afinar.rag.kb import Hit

RERANKERS: dict[str, type] = {}


class Reranker(Protocol):
    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]: ...


def register(name: str):
    def deco(cls):
        RERANKERS[name] = cls
        return cls

    return deco


@register("overlap")
class OverlapReranker:
    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        from afinar.rag.answer import content_words

        q = content_words(query)
        scored = [(len(q & content_words(h.text)) / max(len(q), 1), i, h)
                  for i, h in enumerate(hits)]
        scored.sort(key=lambda t: (-t[0], t[1]))
        return [replace(h, score=s, score_kind="rerank") for s, _, h in scored]


@register("cross-encoder")
class CrossEncoderReranker:
    def __init__(self, model_path: str, device: str | None = None):
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(model_path, device=device, local_files_only=True)

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        if not hits:
            return hits
        import numpy as np

        raw = np.asarray(self.model.predict([(query, h.text) for h in hits]), dtype=float)
        probs = 1 / (1 + np.exp(-raw)) if raw.min() < 0 or raw.max() > 1 else raw
        order = sorted(range(len(hits)), key=lambda i: (-probs[i], i))
        return [replace(hits[i], score=float(probs[i]), score_kind="rerank") for i in order]


def get_reranker(name: str, **kw) -> Reranker:
    from afinar.errors import InvalidRequest

    if name not in RERANKERS:
        raise InvalidRequest(f"unknown reranker {name!r}; choose {', '.join(RERANKERS)}",
                             param="reranker")
    return RERANKERS[name](**kw)
