"""Every registered retriever and fusion rule, table-driven over its registry (a new entry is
covered without editing this file): results in score order, the score kind named, access
control applied before ranking; unknown names are the registry's one error (API and CLI); the
ranking metrics fusion tuning uses."""

import json

import numpy as np
import pytest

from afinar.errors import InvalidRequest
from afinar.evals.ranking import ndcg_at_k, recall_at_k, unique
from afinar.rag.fusion import FUSIONS, Candidates, fuse
from afinar.rag.kb import KnowledgeBases
from afinar.rag.retrievers import RETRIEVERS
from tests.helpers import run_cli

DOCS = {
    "wifi.md": "# Wi-Fi\n\nTo reset the router's Wi-Fi, hold the reset button for ten seconds. "
               "The light turns blue when it is ready.\n",
    "billing.md": "# Billing\n\nInvoices are sent on the first day of each month. You can pay "
                  "by card or bank transfer.\n",
}
SECRET = {"router-admin.md": "# Router admin\n\nThe router's admin password for resetting the "
                             "Wi-Fi is kept by the network team.\n"}
QUERY = "how do I reset the router wifi"


@pytest.fixture
def kb(home, tmp_path):
    for name, files in (("public", DOCS), ("staff", SECRET)):
        (tmp_path / name).mkdir()
        for f, text in files.items():
            (tmp_path / name / f).write_text(text)
    kbs = KnowledgeBases()
    kbs.create("help")
    kbs.add("help", [tmp_path / "public"])
    kbs.add("help", [tmp_path / "staff"], groups=["staff"])
    return kbs


def _names(hits):
    return [h.source.rsplit("/", 1)[-1] for h in hits]


@pytest.mark.parametrize("name", RETRIEVERS.names())
def test_every_registered_retriever(kb, name):
    cls = RETRIEVERS.get(name)
    hits = kb.search("help", QUERY, k=3, mode=name)
    assert _names(hits)[0] == "wifi.md", name
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(0 <= h.score <= 1 for h in hits)
    assert {h.score_kind for h in hits} == {cls.fusion or cls.score_kind}
    assert "router-admin.md" not in _names(hits)  # not readable: never a candidate
    assert "router-admin.md" in _names(kb.search("help", QUERY, k=3, mode=name,
                                                 groups=["staff"]))
    if cls.fusion is None:  # one ranking: a fusion has nothing to merge
        with pytest.raises(InvalidRequest, match="merges two rankings") as e:
            kb.search("help", QUERY, mode=name, fusion=FUSIONS.names()[0])
        assert e.value.param == "fusion"
    else:
        for fusion in FUSIONS.names():
            fused = kb.search("help", QUERY, k=3, mode=name, fusion=fusion)
            assert {h.score_kind for h in fused} == {fusion}
            assert all(h.dense_rank for h in fused)


@pytest.mark.parametrize("name", FUSIONS.names())
def test_every_registered_fusion(name):
    dense = (np.array([3, 1, 2, 0]), np.array([0.9, 0.8, 0.4, 0.1]))
    lexical = (np.array([3, 0, 5]), np.array([7.0, 3.5, 1.0]))
    cos = {5: 0.05}
    for weight in (0.0, 0.5, 1.0):
        out = fuse(dense, lexical, name, weight, cosine=lambda i: cos[i])
        assert {f.index for f in out} == {0, 1, 2, 3, 5}
        assert [f.score for f in out] == sorted((f.score for f in out), reverse=True)
        assert all(0 <= f.score <= 1 and 0 <= f.relevance <= 1 for f in out)
        assert out[0].index == 3  # first in both rankings is first
    c = Candidates.of(dense, lexical, lambda i: cos[i])
    assert FUSIONS.get(name)(c, 0.5)  # the entry itself follows the (candidates, weight) shape


def test_the_mode_a_base_stores_is_its_default(kb, capsys):
    kb.update_info("help", lambda info: info.update(fusion_mode="lexical"))
    assert {h.score_kind for h in kb.search("help", QUERY, k=2)} == {"bm25"}
    code, out, _ = run_cli(capsys, "kb", "search", "help", QUERY, "--json", "-k", "2")
    assert code == 0 and {h["score_kind"] for h in json.loads(out)} == {"bm25"}
    # a fusion asked for with a one-ranking stored mode searches both rankings
    assert {h.score_kind for h in kb.search("help", QUERY, k=2, fusion="weighted")} == {
        "weighted"}


@pytest.mark.parametrize("kw, kind, param", [({"mode": "semantic"}, "retriever", "mode"),
                                             ({"fusion": "borda"}, "fusion", "fusion")])
def test_unknown_names_are_the_registrys_error(kb, kw, kind, param):
    with pytest.raises(InvalidRequest) as e:
        kb.search("help", QUERY, **kw)
    registry = RETRIEVERS if kind == "retriever" else FUSIONS
    assert e.value.message == (f"unknown {kind} {next(iter(kw.values()))!r}; known: "
                               + ", ".join(registry.names()))
    assert e.value.code == f"unknown_{kind}" and e.value.param == param


def test_kb_search_cli_unknown_mode_and_fusion(kb, capsys):
    for flag, value, kind in (("--mode", "semantic", "retriever"),
                              ("--fusion", "borda", "fusion")):
        code, _, err = run_cli(capsys, "kb", "search", "help", QUERY, flag, value)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"error: unknown {kind} '{value}'; known: "), err
    code, out, _ = run_cli(capsys, "kb", "search", "help", QUERY, "--mode", "hybrid",
                           "--fusion", "weighted", "--json", "-k", "2")
    assert code == 0 and '"score_kind": "weighted"' in out
    code, out, _ = run_cli(capsys, "kb", "search", "--help")
    for name in (*RETRIEVERS.names(), *FUSIONS.names(), "cross-encoder:PATH"):
        assert name in out


def test_ranking_metrics():
    assert unique(["a", "b", "a", "c"]) == ["a", "b", "c"]
    assert ndcg_at_k(["a", "b"], {"a"}, 10) == 1.0
    assert ndcg_at_k(["b", "a"], {"a"}, 10) == pytest.approx(1 / np.log2(3))
    assert ndcg_at_k(["b", "b", "a"], {"a"}, 10) == pytest.approx(1 / np.log2(3))  # once
    assert ndcg_at_k(["b", "a"], {"a"}, 1) == 0.0 and ndcg_at_k(["a"], set(), 5) == 0.0
    # two relevant, one found first: DCG 1, ideal 1 + 1/log2(3)
    assert ndcg_at_k(["a", "x"], {"a", "c"}, 10) == pytest.approx(1 / (1 + 1 / np.log2(3)))
    assert recall_at_k(["a", "x", "c"], {"a", "c"}, 2) == 0.5
    assert recall_at_k(["a", "x", "c"], {"a", "c"}, 3) == 1.0 and recall_at_k([], set(), 3) == 0


def test_kb_tune_fusion_cli(kb, tmp_path, capsys):
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(json.dumps({"query": QUERY, "relevant": ["wifi.md"]}) + "\n\n"
                        + json.dumps({"query": "when are invoices sent",
                                      "relevant": ["billing.md"]}) + "\n")
    code, out, err = run_cli(capsys, "kb", "tune-fusion", "help", str(labelled),
                             "--no-rerank", "--no-calibrate")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if "." in line and "nDCG" not in line]
    assert len(rows) == 14 and all(len(line) <= 80 for line in out.splitlines())
    chosen = [r[0] for r in rows if "<-" in r]
    assert len(chosen) == 1 and kb.get("help").info["fusion_mode"] == chosen[0].split(":")[0]
    labelled.write_text(json.dumps({"query": QUERY, "relevant": ["nowhere.md"]}) + "\n")
    code, _, err = run_cli(capsys, "kb", "tune-fusion", "help", str(labelled))
    assert code == 2 and "no document matches 'nowhere.md'" in err


class Prefer:
    """A fake reranker: hits whose text holds its word first (``prefer:WORD``)."""

    argument, argument_required, usage = "word", True, "prefer:WORD"

    def __init__(self, word: str):
        self.word = word

    def rerank(self, query, hits):
        import dataclasses

        order = sorted(hits, key=lambda h: self.word not in h.text)
        return [dataclasses.replace(h, score=1.0 - i / 100, score_kind="rerank")
                for i, h in enumerate(order)]


@pytest.fixture
def prefer(monkeypatch):
    from afinar.rag.rerank import RERANKERS

    monkeypatch.setitem(RERANKERS._entries, "prefer", Prefer)
    return Prefer


def test_tune_fusion_keeps_a_reranker_only_when_it_pays(kb, prefer):
    from afinar.evals.fusion_tuning import tune_fusion

    # the billing page is the labelled answer but no fusion puts it first for this query: a
    # reranker that moves it up helps by far more than the margin
    helps = [(QUERY, {s for s in (d.source for d in kb.documents("help"))
                      if s.endswith("billing.md")})]
    r = tune_fusion(kb, "help", helps, groups=None, rerankers=["prefer:Invoices"])
    rr = r["rerank"]
    assert rr["ndcg"]["none"] < 1.0 and rr["ndcg"]["prefer:Invoices"] == 1.0
    assert rr["chosen"] == "prefer:Invoices" and rr["ndcg"]["none"] == r["ndcg"][r["best"]]
    assert set(rr["latency_ms"]) == {"none", "prefer:Invoices"}
    info = kb.get("help").info
    assert info["rerank"] == "prefer:Invoices" and kb.stored_reranker("help") == info["rerank"]
    # the same reranker on a query it leads astray: not chosen, and the choice is stored
    hurts = [(QUERY, {s for s in (d.source for d in kb.documents("help"))
                      if s.endswith("wifi.md")})]
    r = tune_fusion(kb, "help", hurts, groups=None, rerankers=["prefer:Invoices"])
    assert r["rerank"]["ndcg"]["prefer:Invoices"] < r["rerank"]["ndcg"]["none"]
    assert r["rerank"]["chosen"] == "none" and kb.stored_reranker("help") is None
    assert kb.get("help").info["rerank"] == "none"
    # a gain within the margin is not enough
    r = tune_fusion(kb, "help", helps, groups=None, rerankers=["prefer:Invoices"], margin=1.0)
    assert r["rerank"]["chosen"] == "none"
    with pytest.raises(InvalidRequest, match="unknown reranker"):
        tune_fusion(kb, "help", helps, rerankers=["nosuch"])


def test_the_stored_reranker_is_searchs_default_and_none_turns_it_off(kb, prefer, capsys):
    kb.update_info("help", lambda info: info.update(rerank="prefer:Invoices"))
    code, out, err = run_cli(capsys, "kb", "search", "help", QUERY, "--json", "-k", "2")
    assert code == 0, err
    hits = json.loads(out)
    assert "Invoices" in hits[0]["text"] and hits[0]["score_kind"] == "rerank"
    code, out, err = run_cli(capsys, "kb", "search", "help", QUERY, "--json", "-k", "2",
                             "--rerank", "none")
    assert code == 0, err
    assert {h["score_kind"] for h in json.loads(out)} != {"rerank"}


def test_tune_fusion_cli_synthetic_queries_rerank_and_calibration(kb, prefer, capsys):
    code, out, err = run_cli(capsys, "kb", "tune-fusion", "help", "--rerank", "prefer:Wi-Fi")
    assert code == 0, err
    assert "3 synthetic queries" in out and "rerank: " in out and "prefer:Wi-Fi" in out
    assert "abstain below dense cosine" in out
    assert all(len(line) <= 80 for line in out.splitlines())
    info = kb.get("help").info
    assert info["rerank"] in ("none", "prefer:Wi-Fi") and info["rerank_tuning"]["by"] == "chunk"
    assert "abstain_below" in info
