"""Scores explained: every search result carries the score it is ranked by (results in that
order, its kind named) and what each retriever said (dense cosine, lexical BM25, their ranks);
citation support does not count a chunk's heading path as evidence."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from afinar.rag.answer import cite, support
from afinar.rag.fusion import FUSIONS, RRF_K, fuse
from afinar.rag.kb import KnowledgeBases
from afinar.rag.search import Hit
from tests.helpers import run_cli

DOCS = {
    "wifi.md": "# Wi-Fi\n\nTo reset the router's Wi-Fi, hold the reset button for ten seconds. "
               "The light turns blue when it is ready.\n",
    "billing.md": "# Billing\n\nInvoices are sent on the first day of each month. You can pay "
                  "by card or bank transfer.\n",
    "router.md": "# Router lights\n\nA blinking orange light means the router has no internet "
                 "connection. Restart the router and wait two minutes.\n",
}


def _old_rrf_order(d: dict, lx: dict) -> list[int]:
    """The ranking before scores were exposed (kept: exposing them must not change it)."""
    rd = {i: r for r, i in enumerate(d)}
    rl = {i: r for r, i in enumerate(lx)}
    rrf = {i: sum(1 / (RRF_K + 1 + r[i]) for r in (rd, rl) if i in r) for i in set(d) | set(lx)}
    return sorted(rrf, key=lambda i: (-rrf[i], i))


def test_fused_scores_are_the_ranking_and_keep_each_retrievers_view():
    dense = (np.array([3, 1, 2, 0]), np.array([0.9, 0.8, 0.4, 0.1]))
    lexical = (np.array([1, 0, 5]), np.array([7.0, 3.5, 1.0]))
    cos = {5: 0.05}
    hybrid = fuse(dense, lexical, "rrf", cosine=lambda i: cos[i])
    d = dict(zip(*map(list, dense)))
    d.update(cos)
    d = dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))
    assert [f.index for f in hybrid] == _old_rrf_order(d, dict(zip(*map(list, lexical))))
    # every registered fusion, and one ranking alone (dense or lexical, no fusion)
    for name, args in [*((f, (dense, lexical, f)) for f in FUSIONS.names()),
                       ("dense", (dense, None, None)), ("lexical", (None, lexical, None))]:
        out = fuse(*args, cosine=lambda i: cos[i])
        scores = [f.score for f in out]
        assert scores == sorted(scores, reverse=True), name
        assert all(0 <= s <= 1 for s in scores), name
    assert [f.index for f in fuse(None, lexical, None)] == [1, 0, 5]
    assert fuse(None, lexical, None)[0].score == 1.0  # BM25 / the best candidate's
    assert [f.index for f in fuse(dense, None, None)] == [3, 1, 2, 0]
    by = {f.index: f for f in hybrid}
    assert by[1].dense_rank == 2 and by[1].lexical_rank == 1
    assert by[1].dense_score == pytest.approx(0.8) and by[1].lexical_score == 7.0
    assert by[3].lexical_rank is None and by[3].lexical_score is None
    assert by[1].relevance == pytest.approx(0.8)  # a threshold compares the cosine in hybrid
    # first in both rankings scores 1
    top = fuse((np.array([4]), np.array([0.7])), (np.array([4]), np.array([2.0])), "rrf")
    assert top[0].score == pytest.approx(1.0) and top[0].relevance == pytest.approx(0.7)


@pytest.fixture
def kb(home, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    kbs = KnowledgeBases()
    kbs.create("help")
    kbs.add("help", [folder])
    return kbs


def test_search_results_are_in_the_order_of_their_shown_score(kb):
    kinds = {"hybrid": "rrf", "weighted": "weighted", "dense": "cosine", "lexical": "bm25"}
    for mode, kind in kinds.items():
        hits = kb.search("help", "the router light is blinking, how do I reset it", k=3,
                         mode=mode)
        assert hits, mode
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True), mode
        assert {h.score_kind for h in hits} == {kind}
    hybrid = kb.search("help", "reset the router wifi", k=3)
    assert all(h.dense_score is not None and h.dense_rank for h in hybrid)
    assert any(h.lexical_score is not None and h.lexical_rank for h in hybrid)
    # the threshold is on relevance (the cosine), not on the rank score
    floor = sorted(h.dense_score for h in hybrid)[1]
    kept = kb.search("help", "reset the router wifi", k=3, score_threshold=floor)
    assert kept and all(h.dense_score >= floor for h in kept)


def test_kb_search_cli_names_the_score_and_explains_it(kb, capsys):
    code, out, _ = run_cli(capsys, "kb", "search", "help", "reset the router wifi", "-k", "2",
                           "--explain")
    assert code == 0
    assert out.splitlines()[0] == ("score: rrf, reciprocal rank fusion (1 = first in both "
                                   "rankings), best first")
    assert "dense 0." in out and "(#1)" in out and "lexical " in out
    code, out, _ = run_cli(capsys, "kb", "search", "help", "reset the router wifi", "-k", "2",
                           "--json")
    rows = json.loads(out)
    assert {"score", "score_kind", "dense_score", "dense_rank", "lexical_score",
            "lexical_rank"} <= set(rows[0])
    assert rows[0]["score"] >= rows[1]["score"] and rows[0]["score_kind"] == "rrf"


def test_the_api_returns_results_in_rank_order_with_the_score_kind(kb):
    from afinar.server.vector_stores import Found

    hits = kb.search("help", "reset the router wifi", k=3)
    res = [Found(h, "file-x", "x.md").result() for h in hits]
    assert [r["score"] for r in res] == sorted((r["score"] for r in res), reverse=True)
    assert res[0]["ranking"]["score"] == "rrf"
    assert {"dense_score", "dense_rank", "lexical_score", "lexical_rank"} <= set(res[0]["ranking"])


def _hit(text: str, path: list[str]) -> Hit:
    return Hit(1, "doc1", "/docs/guide.md", text, 0.9, path, [], 0, len(text), {})


def test_a_reply_that_only_repeats_the_heading_path_is_not_supported():
    path = ["Router guide", "Resetting the Wi-Fi"]
    chunk = "Router guide > Resetting the Wi-Fi\nHold the reset button for ten seconds."
    h = _hit(chunk, path)
    heading_only = cite("Resetting the Wi-Fi in the router guide [1].", [h])
    assert [c.supported for c in heading_only] == [False]
    assert support("Router guide: resetting the Wi-Fi", chunk, path) == 0.0
    assert [c.supported for c in cite("Hold the reset button for ten seconds [1].", [h])] == [
        True]
    # an unmarked sentence is not attributed to a chunk through its headings either
    assert cite("Resetting the Wi-Fi, router guide.", [h]) == []


def test_citation_support_metric_ignores_heading_paths():
    from afinar.evals.metrics import CitationSupport, Prediction

    src = [{"source": "/docs/guide.md", "chunk_id": 1,
            "text": "Router guide > Resetting the Wi-Fi\nHold the reset button for ten seconds.",
            "heading_path": ["Router guide", "Resetting the Wi-Fi"]}]
    case = SimpleNamespace(reference="x", question="q")
    metric = CitationSupport()
    assert metric.score(Prediction("Resetting the Wi-Fi, router guide [1].", sources=src),
                        case).value == 0.0
    assert metric.score(Prediction("Hold the reset button for ten seconds [1].", sources=src),
                        case).value == 1.0
