"""Fusing dense and lexical rankings: reciprocal rank fusion, or a weighted sum of scores."""

from __future__ import annotations

RRF_K = 60


def fuse(dense, lexical, mode: str, weight: float = 0.5, cosine=None):
    """``[(chunk_index, score, dense_score, lexical_score)]`` best first; scores in [0, 1].

    ``hybrid``: ordered by reciprocal rank fusion; the score reported (and thresholded) is the
    chunk's cosine similarity to the query, since a rank-based score says nothing about relevance
    (the best of ten irrelevant chunks would score 1).
    ``weighted``: ``weight * cosine + (1 - weight) * bm25 / max bm25`` over the candidates.
    ``cosine(i)`` gives the similarity of a candidate found only lexically.
    """
    d = {int(i): float(s) for i, s in zip(*dense)} if dense is not None else {}
    lx = {int(i): float(s) for i, s in zip(*lexical)} if lexical is not None else {}
    if cosine is not None and d:
        # lexical-only candidates join the dense ranking at their true similarity
        d.update({i: float(cosine(i)) for i in lx if i not in d})
        d = dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))
    if mode == "dense":
        out = [(i, max(0.0, s), s, None) for i, s in d.items()]
    elif mode == "lexical":
        top = max(lx.values(), default=1.0) or 1.0
        out = [(i, s / top, None, s) for i, s in lx.items()]
    elif mode == "weighted":
        top = max(lx.values(), default=1.0) or 1.0
        out = [(i, weight * max(0.0, d.get(i, 0.0)) + (1 - weight) * lx.get(i, 0.0) / top,
                d.get(i), lx.get(i)) for i in set(d) | set(lx)]
    else:
        rd = {i: r for r, i in enumerate(d)}
        rl = {i: r for r, i in enumerate(lx)}
        rrf = {i: sum(1 / (RRF_K + 1 + r[i]) for r in (rd, rl) if i in r)
               for i in set(d) | set(lx)}
        order = sorted(rrf, key=lambda i: (-rrf[i], i))
        return [(i, max(0.0, d[i]) if i in d else 0.0, d.get(i), lx.get(i)) for i in order]
    out.sort(key=lambda t: (-t[1], t[0]))
    return out


