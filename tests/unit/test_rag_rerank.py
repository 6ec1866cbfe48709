"""Reranking a user can turn on: every registered reranker behind one interface (``llm`` over
the chat model's yes/no next-token probabilities, ``cross-encoder:PATH``, ``overlap``)."""

import pytest
import torch

from afinar.errors import InvalidRequest
from afinar.rag.search import Hit
from afinar.rag.rerank import RERANKERS, LLMReranker, get_reranker, yes_no_scores
from tests.helpers import bias_to, run_cli

PASSAGES = ["Invoices are sent on the first day of each month.",
            "To reset the router, hold the reset button for ten seconds.",
            "The light turns blue when the router is ready."]
QUERY = "how do I reset the router"


def _hits() -> list[Hit]:
    return [Hit(i, f"d{i}", f"s{i}.md", t, 1.0 - i / 10, [], [], 0, len(t), {})
            for i, t in enumerate(PASSAGES)]


def test_yes_no_scores_from_constructed_logits():
    logits = torch.zeros(3, 10)
    logits[0, 2] = 10.0  # yes
    logits[1, 7] = 10.0  # no
    s = yes_no_scores(logits, [2, 3], [7])
    assert s[0] > 0.99 and s[1] < 0.01
    # no preference: P(yes) sums its two variants against one "no" token
    assert s[2] == pytest.approx(2 / 3)



@pytest.fixture
def llm(tiny):
    return LLMReranker(lm=tiny)


def test_llm_reranker_scores_in_unit_interval_and_orders_by_them(llm):
    hits = llm.rerank(QUERY, _hits())
    assert sorted(h.chunk_id for h in hits) == [0, 1, 2]
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert {h.score_kind for h in hits} == {"rerank"}
    # batched (padded) scores equal one-at-a-time scores
    one = [llm.scores(QUERY, [p])[0] for p in PASSAGES]
    assert llm.scores(QUERY, PASSAGES) == pytest.approx(one, abs=1e-4)


def test_llm_reranker_follows_the_model_yes_probability(tiny):
    bias_to(tiny, tiny.tokenizer.encode("yes", add_special_tokens=False)[0])
    r = LLMReranker(lm=tiny)
    assert all(s > 0.9 for s in r.scores(QUERY, PASSAGES))
    bias_to(tiny, tiny.tokenizer.encode("no", add_special_tokens=False)[0])
    assert all(s < 0.1 for s in LLMReranker(lm=tiny).scores(QUERY, PASSAGES))


@pytest.mark.parametrize("name", sorted(RERANKERS))
def test_every_registered_reranker(name, tiny, tmp_path):
    if name == "cross-encoder":
        # no cross-encoder ships; a folder that is not one is one clear error
        with pytest.raises(InvalidRequest, match="could not be loaded"):
            get_reranker(f"cross-encoder:{tmp_path}")
        return
    r = get_reranker(name, lm=tiny) if name == "llm" else get_reranker(name)
    hits = r.rerank(QUERY, _hits())
    assert len(hits) == 3 and {h.score_kind for h in hits} == {"rerank"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert r.rerank(QUERY, []) == []
    if name == "overlap":
        assert hits[0].chunk_id == 1


@pytest.mark.parametrize("name", ["nope", "", "bm25:x", "magic:llm"])
def test_unknown_reranker_is_the_registrys_error_naming_the_known_ones(name):
    with pytest.raises(InvalidRequest) as e:
        get_reranker(name)
    assert e.value.message.startswith(f"unknown reranker {name!r}")
    assert e.value.message.endswith("known: " + ", ".join(RERANKERS.names()))
    assert e.value.code == "unknown_reranker" and e.value.param == "reranker"


@pytest.mark.parametrize("name, needs", [("cross-encoder", "needs an argument: "
                                          "cross-encoder:PATH"),
                                         ("overlap:x", "takes no argument")])
def test_a_reranker_argument_is_checked_against_the_entry(name, needs):
    with pytest.raises(InvalidRequest, match=needs):
        get_reranker(name)


def test_a_name_with_an_argument_looks_up_its_prefix(monkeypatch):
    from afinar.rag import rerank as rr

    assert RERANKERS.get("llm:some-model") is LLMReranker
    assert RERANKERS.get(" cross-encoder:/x") is rr.CrossEncoderReranker
    got = []

    class Fake:
        argument, usage = "model", "fake:MODEL"

        def __init__(self, model=None):
            got.append(model)

    monkeypatch.setitem(RERANKERS._entries, "fake", Fake)
    assert isinstance(get_reranker("fake:m1", lm=object()), Fake) and got == ["m1"]
    assert "fake:MODEL" in rr.usage()


@pytest.fixture
def kb(tiny, tmp_path, monkeypatch):
    import afinar.rag.rerank as rr
    from afinar.rag.kb import KnowledgeBases
    from afinar.settings import reset_settings

    monkeypatch.setenv("AFINAR_DEFAULT_MODEL", "tiny")
    reset_settings()
    monkeypatch.setattr(rr, "_cache", None)
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, text in enumerate(PASSAGES):
        (folder / f"p{i}.md").write_text(f"# Note {i}\n\n{text}\n")
    kbs = KnowledgeBases()
    kbs.create("help")
    kbs.add("help", [folder])
    return kbs


@pytest.mark.parametrize("name", ["overlap", "llm"])
def test_kb_search_rerank_flag(kb, capsys, name):
    import json

    code, out, err = run_cli(capsys, "kb", "search", "help", QUERY, "-k", "2", "--rerank",
                             name, "--rerank-depth", "3", "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 2 and {h["score_kind"] for h in hits} == {"rerank"}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    if name == "overlap":
        assert "reset button" in hits[0]["text"]
    code, out, _ = run_cli(capsys, "kb", "search", "help", QUERY, "-k", "2", "--json")
    assert code == 0 and {h["score_kind"] for h in json.loads(out)} == {"rrf"}


def test_kb_search_unknown_reranker_is_one_error_line(kb, capsys):
    code, out, err = run_cli(capsys, "kb", "search", "help", QUERY, "--rerank", "magic")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert "unknown reranker 'magic'; known: cross-encoder, llm, overlap" in err


@pytest.mark.parametrize("name", ["llm", "overlap"])
def test_ask_rerank_flag(kb, tiny_long, capsys, name):
    import json

    code, out, err = run_cli(capsys, "ask", QUERY, "--kb", "help", "-m", "tiny-long", "--rerank",
                             name, "--threshold", "0", "--max-tokens", "4", "--json")
    assert code == 0, err
    srcs = json.loads(out)["sources"]
    assert srcs and {s["score_kind"] for s in srcs} == {"rerank"}
    code, _, err = run_cli(capsys, "ask", QUERY, "--kb", "help", "--rerank", "cross-encoder")
    assert code == 2 and err.startswith("error:") and "cross-encoder:PATH" in err
    code, _, err = run_cli(capsys, "ask", QUERY, "--kb", "help", "--rerank", "magic")
    assert code == 2 and "unknown reranker 'magic'" in err and "overlap" in err


@pytest.mark.parametrize("name", ["overlap", "llm"])
def test_eval_strategy_rerank_option(kb, tiny, name):
    from afinar.evals import strategies as st
    from afinar.evals.cases import Case

    loaded = []
    ctx = st.Context(load=lambda m: loaded.append(m) or tiny, default_model="tiny",
                     knowledge_base="help")
    case = Case("line-1", 1, [{"role": "user", "content": QUERY}], "hold the button")
    spec = st.StrategySpec(type="rag", k=2, rerank=name)
    srcs = st.build(spec, ctx).retrieve(case)
    assert len(srcs) == 2
    if name == "overlap":
        assert "reset button" in srcs[0]["text"]
    else:
        assert loaded == ["tiny"]  # the strategy's chat model, through the run's loader
    with pytest.raises(InvalidRequest, match="strategy rag: rerank: .*overlap"):
        st.build(st.StrategySpec(type="rag", rerank="magic"), ctx)


def test_api_ranker_maps_openai_values_and_afinar_names():
    from afinar.rag.rerank import OverlapReranker, for_ranker

    for v in (None, "none", "auto", "default-2024-11-15"):
        assert for_ranker(v) is None, v
    assert isinstance(for_ranker("overlap"), OverlapReranker)
    assert isinstance(for_ranker("auto", "overlap"), OverlapReranker)  # AFINAR_RERANKER
    assert for_ranker("none", "overlap") is None
    with pytest.raises(InvalidRequest, match="overlap"):
        for_ranker("magic")


def test_api_unknown_ranker_is_a_400_naming_the_known_ones(home):
    from fastapi.testclient import TestClient

    from afinar.server.app import create_app

    app = create_app(auth=False)
    app.state.spawn_workers = False
    with TestClient(app) as http:
        r = http.post("/v1/vector_stores/vs_nope/search",
                      json={"query": "q", "ranking_options": {"ranker": "magic"}})
        assert r.status_code == 400, r.text
        msg = r.json()["error"]["message"]
        assert "unknown reranker 'magic'" in msg
        for known in (*RERANKERS.names(), "auto"):
            assert known in msg
        r = http.post("/v1/vector_stores/vs_nope/search",
                      json={"query": "q", "ranking_options": {"ranker": "overlap"}})
        assert r.status_code == 404, r.text  # the name is accepted; the store is unknown


def test_vector_store_search_reranks_with_the_api_ranker(kb, monkeypatch):
    from afinar.server import vector_stores as vs

    monkeypatch.delenv("AFINAR_RERANKER", raising=False)
    found = vs.search(kb, ["help"], [QUERY], groups=None, k=2,
                      ranking_options={"ranker": "overlap"})
    res = [f.result() for f in found]
    assert len(res) == 2 and {r["ranking"]["score"] for r in res} == {"rerank"}
    assert "reset button" in res[0]["content"][0]["text"]
    plain = vs.search(kb, ["help"], [QUERY], groups=None, k=2, ranking_options={"ranker": "auto"})
    assert {f.hit.score_kind for f in plain} == {"rrf"}


def test_the_servers_llm_ranker_uses_the_model_the_server_has_loaded(tiny):
    from afinar.rag.rerank import for_ranker

    asked = []

    def load(model_id):
        asked.append(model_id)
        return tiny

    r = for_ranker("llm:tiny-chat", load=load)
    assert isinstance(r, LLMReranker) and r.lm is tiny and asked == ["tiny-chat"]
    assert for_ranker("auto", "llm:tiny-chat", load=load).lm is tiny  # AFINAR_RERANKER
