"""Choosing a knowledge base's fusion, and whether reranking pays, on labelled or synthetic
queries (``afinar kb tune-fusion``).

Each candidate, reciprocal rank fusion (``hybrid``), one retriever alone (``dense``,
``lexical``) and the weighted sum of the two scores for weights 0, 0.1, ..., 1, is scored by its
mean nDCG@k (``evals.ranking``) over (query, relevant items) pairs. The best is stored on the
base (``info``: ``fusion_mode``, ``fusion_weight``), where search reads its default from; a tie
goes to ``hybrid``.

Then each reranker asked for (``rerankers``: e.g. ``llm``, the configured chat model, and
``cross-encoder:PATH``) reorders the chosen fusion's results on the same queries. The best one
is stored (``info["rerank"]``) only when it raises nDCG@k by more than ``margin`` (default
``MARGIN``, 0.02) over no reranking, else ``none``; callers that are not told which reranker to
use read it (``KbSearch.stored_reranker``). Both nDCG numbers and the mean latency per query
with and without reranking are returned and stored (``rerank_tuning``).

``calibrate_abstention`` learns the base's abstention threshold (``rag.calibration``) from
the same kind of queries against the packaged off-topic questions (``data/general_qa.jsonl``,
which the forgetting check also asks).

Without a labelled file the queries are synthetic (``rag.calibration.synthetic_queries``): the
first sentence of sampled chunks, with that chunk as the relevant item. They are easier than
real questions (the query's words are the chunk's own, which favours lexical search and leaves
a reranker little to fix), so a choice made on them is a weaker one than on labelled queries.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from collections.abc import Iterable, Sequence
from typing import Any

from afinar.errors import InvalidRequest
from afinar.evals.ranking import ndcg_at_k
from afinar.rag.calibration import calibrate, synthetic_queries
from afinar.rag.kb import KnowledgeBases
from afinar.rag.rerank import get_reranker, parse_name

WEIGHTS = [i / 10 for i in range(11)]
MARGIN = 0.02  # nDCG@10 a reranker must add to be chosen


def candidates() -> list[tuple[str, str, float | None]]:
    """(label, search mode, weight) of every fusion tried."""
    return [("hybrid", "hybrid", None), ("dense", "dense", None), ("lexical", "lexical", None),
            *((f"weighted:{w:.1f}", "weighted", w) for w in WEIGHTS)]


def _item(by: str):
    if by not in ("source", "chunk"):
        raise InvalidRequest(f"relevance is by source or chunk, not {by!r}", param="by")
    return (lambda h: h.source) if by == "source" else (lambda h: str(h.chunk_id))


def tune_fusion(kbs: KnowledgeBases, kb: str, labelled: list[tuple[str, set[str]]],
                groups: Iterable[str] | None = None, k: int = 10, *,
                rerankers: Sequence[str] = (), margin: float = MARGIN, by: str = "source",
                load_reranker=None) -> dict[str, Any]:
    """Score every fusion on ``labelled`` (query, relevant items: sources, or chunk ids when
    ``by="chunk"``), store the best on ``kb``; with ``rerankers`` (names), also decide whether
    reranking pays (see the module). Returns ``{"best": label, "ndcg": {label: mean nDCG@k}}``
    and, with rerankers, ``"rerank"``: ``{"chosen": name | "none", "margin", "ndcg":
    {"none" | name: nDCG@k}, "latency_ms": {...: mean per query}}``."""
    if not labelled:
        raise InvalidRequest("the labelled set is empty", param="file")
    for name in rerankers:
        parse_name(name)  # an unknown name is refused before any search runs
    item = _item(by)
    groups = list(groups) if groups is not None else None

    def score(mode: str, weight: float | None, reranker=None) -> tuple[float, float]:
        total, t = 0.0, time.perf_counter()
        for q, rel in labelled:
            hits = kbs.search(kb, q, groups=groups, k=k, mode=mode, weight=weight,
                              reranker=reranker)
            total += ndcg_at_k((item(h) for h in hits), rel, k)
        return total / len(labelled), (time.perf_counter() - t) * 1000 / len(labelled)

    table, latency = {}, {}
    for label, mode, w in candidates():
        table[label], latency[label] = score(mode, w)
    best = max(table, key=lambda m: (table[m], m == "hybrid"))
    mode = best.split(":")[0]
    weight = float(best.split(":")[1]) if best.startswith("weighted:") else None
    out: dict[str, Any] = {"best": best, "ndcg": table}
    if rerankers:
        load = load_reranker or get_reranker
        nd, lat = {"none": table[best]}, {"none": latency[best]}
        for name in rerankers:
            nd[name], lat[name] = score(mode, weight, load(name))
        top = max(rerankers, key=lambda n: nd[n])
        chosen = top if nd[top] > nd["none"] + margin else "none"
        out["rerank"] = {"chosen": chosen, "margin": margin, "ndcg": nd, "latency_ms": lat,
                         "queries": len(labelled), "by": by}

    def choose(info: dict) -> None:
        info["fusion_mode"] = mode
        if weight is not None:
            info["fusion_weight"] = weight
        if "rerank" in out:
            info["rerank"] = out["rerank"]["chosen"]
            info["rerank_tuning"] = out["rerank"]

    kbs.update_info(kb, choose)
    return out


def off_topic_questions() -> list[str]:
    """General-knowledge questions (capitals, planets, ...) no product base should answer."""
    text = resources.files("afinar.evals").joinpath("data/general_qa.jsonl").read_text()
    return [json.loads(x)["question"] for x in text.splitlines() if x.strip()]


def calibrate_abstention(kbs: KnowledgeBases, kb: str, answerable: Sequence[str] | None = None,
                         *, sample: int = 50, off_topic: Sequence[str] | None = None,
                         store: bool = True) -> dict[str, Any]:
    """Learn and store ``kb``'s abstention threshold: ``answerable`` questions (else ``sample``
    synthetic ones from its chunks, easier than real questions) against ``off_topic`` ones
    (else the packaged general questions)."""
    synthetic = answerable is None
    if synthetic:
        answerable = [q for q, _ in synthetic_queries(kbs, kb, sample)]
    r = calibrate(kbs, kb, list(answerable), list(off_topic or off_topic_questions()),
                  store=store)
    return {**r, "synthetic": synthetic}
