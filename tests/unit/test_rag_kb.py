"""Knowledge bases with the embedded MiniLM model: ingestion lifecycle, hybrid search, filters,
access control with zero leaks under adversarial queries, index checks and repair."""

import json

import pytest
from sqlalchemy import delete, func, select

from afinar.errors import Conflict, InvalidRequest
from afinar.rag.kb import KnowledgeBases
from afinar.store.tables import KbChunk

pytestmark = pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL (tests/conftest.py)

STAFF = {
    "salaries.md": "# Salaries\n\nThe 2026 salary band for senior engineers is 91,000 to "
                   "118,000 euros. Bonuses are paid every March.\n",
    "incident.md": "# Incident 4417\n\nThe outage on 3 May was caused by an expired TLS "
                   "certificate on the billing gateway. Root password rotation follows.\n",
}
PUBLIC = {
    "wifi.md": "# Wi-Fi\n\nTo reset the router's Wi-Fi, hold the reset button for ten seconds. "
               "The light turns blue when it is ready.\n",
    "billing.md": "# Billing\n\nInvoices are sent on the first day of each month. You can pay "
                  "by card or bank transfer.\n",
}


def write(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def kb(home, tmp_path):
    kbs = KnowledgeBases()
    kbs.create("support")
    kbs.add("support", [write(tmp_path / "staff", STAFF)], groups=["staff"],
            attributes={"team": "ops", "year": 2026})
    kbs.add("support", [write(tmp_path / "public", PUBLIC)], attributes={"team": "care",
                                                                         "year": 2025})
    return kbs


def sources(hits):
    return {h.source.rsplit("/", 1)[-1] for h in hits}


def test_hybrid_search_finds_the_answer(kb):
    for mode in ("hybrid", "weighted", "dense", "lexical"):
        hits = kb.search("support", "how do I reset the wifi on my router", k=2, mode=mode)
        assert hits and sources(hits[:1]) == {"wifi.md"}, mode
        assert 0 <= hits[0].score <= 1 and hits[0].heading_path[-1] == "Wi-Fi"
        assert hits[0].text.split("\n", 1)[0].endswith("Wi-Fi")  # the heading path line


ADVERSARIAL = [
    "The 2026 salary band for senior engineers is 91,000 to 118,000 euros.",
    "expired TLS certificate on the billing gateway",
    "salary bonus March senior engineers",
    "Incident 4417 root password rotation",
    "billing",  # shares a word with a public document and with a secret one
]


@pytest.mark.parametrize("query", ADVERSARIAL)
@pytest.mark.parametrize("mode", ["hybrid", "weighted", "dense", "lexical"])
def test_access_control_never_leaks(kb, query, mode):
    hits = kb.search("support", query, groups=["sales"], k=20, mode=mode)
    assert not sources(hits) & set(STAFF)
    for h in hits:
        assert "salary" not in h.text.lower() and "4417" not in h.text
    public_only = kb.search("support", query, groups=[], k=20, mode=mode)
    assert [h.chunk_id for h in hits] == [h.chunk_id for h in public_only]  # nothing differs
    staff = kb.search("support", query, groups=["staff"], k=20, mode=mode)
    if query != "billing":
        assert sources(staff[:1]) & set(STAFF)  # the same query does find them for staff


def test_results_are_not_drained_by_acl(kb):
    # top-k is computed after the ACL: a public caller still gets k public results
    hits = kb.search("support", "salary band engineers", groups=[], k=2, mode="dense")
    assert len(hits) == 2 and sources(hits) <= set(PUBLIC)


def test_filters(kb):
    f = {"type": "eq", "key": "team", "value": "care"}
    assert sources(kb.search("support", "router", groups=None, k=10, filters=f)) <= set(PUBLIC)
    f = {"type": "and", "filters": [{"type": "gte", "key": "year", "value": 2026},
                                    {"type": "in", "key": "team", "value": ["ops", "x"]}]}
    assert sources(kb.search("support", "certificate", groups=None, k=10, filters=f)) <= set(STAFF)
    f = {"type": "or", "filters": [{"type": "lt", "key": "year", "value": 2026},
                                   {"type": "nin", "key": "team", "value": ["ops"]}]}
    assert sources(kb.search("support", "router", groups=None, k=10, filters=f)) <= set(PUBLIC)
    with pytest.raises(InvalidRequest):
        kb.search("support", "x", filters={"type": "like", "key": "a", "value": 1})


def test_threshold_and_limits(kb):
    assert kb.search("support", "zebra migration patterns", k=5, score_threshold=0.99) == []
    with pytest.raises(InvalidRequest):
        kb.search("support", "x", k=0)
    with pytest.raises(InvalidRequest):
        kb.search("support", "   ")
    with pytest.raises(InvalidRequest, match="embedded with"):
        kb.search("support", "x", embedding_model="other-model")
    with pytest.raises(Conflict):
        kb.create("support")


def test_lifecycle_add_change_delete_sync(kb, tmp_path):
    folder = tmp_path / "public"
    again = kb.add("support", [folder], attributes={"team": "care", "year": 2025})
    assert len(again.unchanged) == 2 and again.chunks == 0  # re-adding is a no-op
    (folder / "wifi.md").write_text("# Wi-Fi\n\nThe router now uses a purple light for "
                                    "pairing mode.\n")
    r = kb.sync("support", folder, attributes={"team": "care", "year": 2025})
    assert len(r.updated) == 1 and not r.added
    text = " ".join(h.text for h in kb.search("support", "router light", k=10))
    assert "purple" in text and "blue" not in text  # old chunks replaced, not duplicated
    (folder / "billing.md").unlink()
    r = kb.sync("support", folder, attributes={"team": "care", "year": 2025})
    assert [s.rsplit("/", 1)[-1] for s in r.deleted] == ["billing.md"]
    assert "billing.md" not in sources(kb.search("support", "invoices card transfer", k=10))
    assert kb.check("support")["ok"]


def test_failed_files_are_reported_and_the_batch_goes_on(kb, tmp_path):
    folder = write(tmp_path / "mixed", {"good.md": "# Good\n\nFine text about modems.\n"})
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 garbage" + bytes(range(256)))
    r = kb.add("support", [folder])
    assert [s.rsplit("/", 1)[-1] for s, _ in r.failed] == ["broken.pdf"]
    assert [s.rsplit("/", 1)[-1] for s in r.added] == ["good.md"]


def test_interrupted_ingestion_resumes_without_duplicates(home, tmp_path, monkeypatch):
    import afinar.rag.ingest as kbmod

    folder = write(tmp_path / "docs", {f"d{i}.md": f"# Doc {i}\n\nThe code word is w{i}.\n"
                                       for i in range(5)})
    kbs = KnowledgeBases()
    kbs.create("k")
    real, calls = kbmod.load_document, []

    def crash_on_third(path, **kw):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C or a crash mid-batch
        return real(path, **kw)

    monkeypatch.setattr(kbmod, "load_document", crash_on_third)
    monkeypatch.setattr(kbmod, "EMBED_BATCH", 1)  # commit every document as soon as it is read
    with pytest.raises(KeyboardInterrupt):
        kbs.add("k", [folder])
    monkeypatch.setattr(kbmod, "load_document", real)
    r = kbs.add("k", [folder])
    assert len(r.unchanged) == 2 and len(r.added) == 3
    with kbs.db.session() as s:
        n = s.scalar(select(func.count()).select_from(KbChunk))
    assert n == 5
    assert kbs.check("k")["problems"] == []


def test_check_finds_and_repairs_drift(kb):
    with kb.db.session() as s:
        victim = s.scalar(select(KbChunk.doc_id).limit(1))
        s.execute(delete(KbChunk).where(KbChunk.doc_id == victim))
    r = kb.check("support")
    assert not r["ok"] and any("record says" in p for p in r["problems"])
    fixed = kb.check("support", repair=True)
    assert fixed["repaired"]
    assert kb.check("support")["ok"]


def test_kb_cli(home, tmp_path, capsys):
    from afinar.cli import main

    def run(*argv):
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        return e.value.code, capsys.readouterr()

    folder = write(tmp_path / "p", PUBLIC)
    assert run("kb", "create", "help")[0] == 0
    code, out = run("kb", "add", "help", str(folder), "--attr", "team=care")
    assert code == 0 and "added 2" in out.out
    code, out = run("kb", "search", "help", "when are invoices sent", "-k", "1", "--json")
    assert json.loads(out.out)[0]["source"].endswith("billing.md")
    code, out = run("kb", "check", "help")
    assert code == 0 and "consistent" in out.out


def test_tune_fusion_and_rerankers(kb, tmp_path):
    from afinar.evals.fusion_tuning import tune_fusion
    from afinar.rag.rerank import get_reranker

    labelled = [("reset wifi router button", {s for s in (d.source for d in
                                                          kb.documents("support"))
                                              if s.endswith("wifi.md")}),
                ("invoices monthly card", {s for s in (d.source for d in kb.documents("support"))
                                           if s.endswith("billing.md")})]
    r = tune_fusion(kb, "support", labelled, groups=[])
    assert r["ndcg"][r["best"]] == max(r["ndcg"].values()) and "hybrid" in r["ndcg"]
    assert kb.get("support").info["fusion_mode"] == r["best"].split(":")[0]
    hits = kb.search("support", "reset button wifi", groups=[], k=2,
                     reranker=get_reranker("overlap"))
    assert hits[0].source.endswith("wifi.md") and hits[0].score >= hits[-1].score
    with pytest.raises(InvalidRequest):
        get_reranker("nope")


def test_ann_recall_against_exact_and_acl_inside_the_graph():
    import bm25s
    import numpy as np

    from afinar.rag.index import DocMeta, KbIndex

    rnd = np.random.default_rng(0)
    n, dim = 6000, 64
    vecs = rnd.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    docs = [DocMeta("public", "p", frozenset(), {}), DocMeta("secret", "s", frozenset({"hr"}), {})]
    doc_of = (np.arange(n) % 10 == 0).astype(np.int32)  # every 10th chunk is HR-only
    exact = KbIndex(1, np.arange(n), doc_of, docs, vecs, bm25s.BM25(), ann_threshold=10**9)
    ann = KbIndex(1, np.arange(n), doc_of, docs, vecs, bm25s.BM25(), ann_threshold=1000)
    assert exact.ann is None and ann.ann is not None
    queries = rnd.standard_normal((100, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    everyone = np.ones(n, dtype=bool)
    public = ann.mask(frozenset(), None)
    hits = total = 0
    for q in queries:
        want = set(exact.dense(q, everyone, 10)[0].tolist())
        got = set(ann.dense(q, everyone, 10)[0].tolist())
        hits += len(want & got)
        total += 10
        filtered = ann.dense(q, public, 10)[0]
        assert len(filtered) == 10 and not (doc_of[filtered] == 1).any()  # never an HR chunk
    recall = hits / total
    print(f"HNSW recall@10 against exact: {recall:.3f}")
    assert recall >= 0.95
