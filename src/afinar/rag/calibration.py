"""Calibrated abstention: when the best hit for a question is weak *for this knowledge base*,
a grounded answer says the sources do not hold the answer instead of guessing.

What "weak" means is learned per base from its own score distribution, not a constant: the
top-1 dense cosine similarity of questions the base answers (positives) against that of
off-topic questions (negatives); the threshold is the one that maximises balanced accuracy of
abstention (``learn_threshold``). It is stored in the base's ``info`` (``abstain_below``, next to
the fusion choice of ``kb tune-fusion``) with what it was learned from (``abstain_calibration``).

Positives are labelled queries when the caller has them, else synthetic ones
(``synthetic_queries``): the first sentence of sampled chunks. Those are *easier* than real
questions (the words come from the chunk itself), so their scores sit higher than real
questions' and a threshold learned from them alone could abstain on real answerable questions;
ties are therefore broken towards the lower threshold, and ``benchmarks/abstention.py`` measures
the result on real questions.

A threshold is not recomputed in the request path (that would run dozens of searches inside
one answer, and the off-topic set belongs to the evaluations): it is ignored, so the base
behaves as an uncalibrated one, once the base holds less than half or more than twice the
chunks it was learned on (``threshold_of``); ``afinar kb calibrate`` (or ``kb tune-fusion``)
learns it again. A base without a threshold never abstains on a weak hit (as before).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from afinar.errors import InvalidRequest
from afinar.store.tables import KbChunk, KbDocument

if TYPE_CHECKING:
    from afinar.rag.kb import KnowledgeBases
    from afinar.rag.search import Hit

KEY = "abstain_below"
MIN_EACH = 3  # positives and negatives needed to learn a threshold
_SENTENCE = re.compile(r"(.+?[.!?])(?:\s|$)", re.S)


def learn_threshold(positives: Sequence[float], negatives: Sequence[float]
                    ) -> tuple[float, float]:
    """``(threshold, balanced accuracy)``: abstaining when a score is below the threshold
    should catch the negatives and spare the positives. Candidates are the midpoints between
    consecutive distinct scores (and just outside both ends); balanced accuracy is the mean of
    the share of negatives below and the share of positives at or above; ties go to the lowest
    threshold (answer rather than abstain)."""
    if len(positives) < MIN_EACH or len(negatives) < MIN_EACH:
        raise InvalidRequest(f"calibration needs at least {MIN_EACH} answerable and "
                             f"{MIN_EACH} off-topic questions (got {len(positives)} and "
                             f"{len(negatives)})", param="queries")
    values = sorted(set(positives) | set(negatives))
    cands = [values[0] - 1e-6, *((a + b) / 2 for a, b in zip(values, values[1:])),
             values[-1] + 1e-6]

    def ba(t: float) -> float:
        return (sum(s < t for s in negatives) / len(negatives)
                + sum(s >= t for s in positives) / len(positives)) / 2

    best = max(cands, key=lambda t: (ba(t), -t))
    return float(best), ba(best)


def first_sentence(text: str, heading_path: list[str] | None) -> str:
    """The first sentence of a chunk's body (its heading-path line left out), else its
    headings: a synthetic query."""
    body = text
    if heading_path:
        first, sep, rest = text.partition("\n")
        if sep and first.strip() and all(h in first for h in heading_path[-1:]):
            body = rest
    body = " ".join(body.split())
    m = _SENTENCE.match(body)
    sent = (m.group(1) if m else body)[:300].strip()
    return sent if len(sent.split()) >= 3 else " ".join(heading_path or []) or sent


def synthetic_queries(kbs: KnowledgeBases, kb: str, n: int = 50, seed: int = 0,
                      groups: Iterable[str] | None = None) -> list[tuple[str, set[str]]]:
    """``n`` sampled chunks as (query, {chunk id}): each chunk's first sentence (else its
    heading path) is the query and the chunk its one relevant item. These are easier than real
    questions: the query's words are the chunk's own. ``groups``: sample only documents they
    may read (public ones have no groups); ``None``: all."""
    rec = kbs.get(kb)
    with kbs.db.session() as s:
        rows = list(s.execute(select(KbChunk.rowid, KbChunk.text, KbChunk.heading_path,
                                     KbDocument.groups)
                              .join(KbDocument, KbDocument.id == KbChunk.doc_id)
                              .where(KbChunk.kb_id == rec.id).order_by(KbChunk.rowid)))
    if groups is not None:
        mine = set(groups)
        rows = [r for r in rows if not r[3] or mine & set(r[3])]
    rng = random.Random(seed)
    out = []
    for rowid, text, path, _ in rng.sample(rows, min(n, len(rows))):
        q = first_sentence(text, path)
        if q.strip():
            out.append((q, {str(rowid)}))
    return out


def top_dense(kbs: KnowledgeBases, kb: str, queries: Iterable[str]) -> list[float]:
    """The best dense cosine similarity in the whole base (no access restriction) per query."""
    out = []
    for q in queries:
        hits = kbs.search(kb, q, groups=None, k=1, mode="dense")
        out.append(float(hits[0].dense_score or 0.0) if hits else 0.0)
    return out


def calibrate(kbs: KnowledgeBases, kb: str, answerable: Sequence[str],
              off_topic: Sequence[str], *, store: bool = True) -> dict[str, Any]:
    """Learn the base's abstention threshold from the top-1 dense scores of ``answerable``
    and ``off_topic`` questions; store it (``info[KEY]``) unless ``store`` is false."""
    pos, neg = top_dense(kbs, kb, answerable), top_dense(kbs, kb, off_topic)
    t, ba = learn_threshold(pos, neg)
    _, idx = kbs.index(kb)
    result = {"threshold": t, "balanced_accuracy": ba, "positives": len(pos),
              "negatives": len(neg), "chunks": idx.size,
              "positive_median": sorted(pos)[len(pos) // 2],
              "negative_median": sorted(neg)[len(neg) // 2]}
    if store:
        kbs.update_info(kb, lambda info: info.update({KEY: t, "abstain_calibration": result}))
    return result


def threshold_of(kbs: KnowledgeBases, kb: str) -> float | None:
    """The base's learned threshold, or ``None`` (never abstain on a weak hit): none was
    learned, or the base has since shrunk below half or grown past twice its size then."""
    rec, idx = kbs.index(kb)
    info = rec.info or {}
    if KEY not in info:
        return None
    then = int((info.get("abstain_calibration") or {}).get("chunks") or 0)
    if then and not then / 2 <= idx.size <= 2 * then:
        return None
    return float(info[KEY])


def best_dense(hits: Iterable[Hit]) -> float | None:
    """The highest dense (cosine) score among the hits; ``None`` when none has one (a
    lexical-only search gives no dense signal to judge by)."""
    scores = [h.dense_score for h in hits if h.dense_score is not None]
    return max(scores) if scores else None


def weak(kbs: KnowledgeBases, kbs_searched: Sequence[str], hits: Sequence[Hit]) -> bool:
    """Should a grounded answer abstain? Only when every base searched has a learned threshold
    and the best dense score among the hits is below the lowest of them; no hits at all is the
    caller's own "nothing found"."""
    if not hits:
        return False
    thresholds = [threshold_of(kbs, kb) for kb in kbs_searched]
    if not thresholds or any(t is None for t in thresholds):
        return False
    best = best_dense(hits)
    return best is not None and best < min(thresholds)
