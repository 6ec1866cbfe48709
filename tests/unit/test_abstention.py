"""Calibrated abstention (rag.calibration): a threshold learned per base from the best dense
score of questions it answers against off-topic ones; ``ask`` and the server's grounded path
abstain below it and answer above it; a base without one behaves as before."""

import pytest

from afinar.errors import InvalidRequest
from afinar.models import SamplingParams
from afinar.rag import calibration as cal
from afinar.rag.answer import NOTHING_FOUND, ask
from afinar.rag.kb import KnowledgeBases
from tests.helpers import run_cli

DOCS = {
    "wifi.md": "# Wi-Fi\n\nTo reset the router's Wi-Fi, hold the reset button for ten seconds. "
               "The light turns blue when the router is ready again.\n",
    "billing.md": "# Billing\n\nInvoices are sent on the first day of each month. You can pay "
                  "an invoice by card or by bank transfer.\n",
    "shipping.md": "# Shipping\n\nOrders leave our warehouse within two working days. Parcels "
                   "are tracked, and a courier delivers them to your door.\n",
}
ON_TOPIC = ["How do I reset the router's Wi-Fi?", "When are invoices sent?",
            "How long before my order leaves the warehouse?"]
OFF_TOPIC = ["What is the capital of France?", "How many legs does a spider have?",
             "Which planet is known as the Red Planet?", "Who painted the Mona Lisa?"]
KW = {"params": SamplingParams(temperature=0, max_tokens=4), "system": "Use the sources."}


@pytest.fixture
def kb(home, tmp_path):
    (tmp_path / "docs").mkdir()
    for name, text in DOCS.items():
        (tmp_path / "docs" / name).write_text(text)
    kbs = KnowledgeBases()
    kbs.create("help")
    kbs.add("help", [tmp_path / "docs"])
    return kbs


def test_threshold_lies_between_separated_distributions():
    pos, neg = [0.62, 0.7, 0.81, 0.9], [0.1, 0.18, 0.25, 0.3]
    t, ba = cal.learn_threshold(pos, neg)
    assert max(neg) < t < min(pos) and ba == 1.0
    # shifted distributions move the threshold with them: it is learned, not a constant
    t2, _ = cal.learn_threshold([p - 0.3 for p in pos], [n - 0.3 for n in neg])
    assert t2 == pytest.approx(t - 0.3)
    # overlapping ones: the best split is imperfect, and ties go to the lower threshold
    t3, ba3 = cal.learn_threshold([0.5, 0.6, 0.2], [0.1, 0.55, 0.15])
    assert 0.5 < ba3 < 1.0 and t3 == pytest.approx(0.175)
    with pytest.raises(InvalidRequest, match="at least 3"):
        cal.learn_threshold([0.9, 0.8], [0.1, 0.2, 0.3])


def test_calibrate_stores_a_threshold_that_separates_the_bases_questions(kb):
    r = cal.calibrate(kb, "help", ON_TOPIC, OFF_TOPIC)
    info = kb.get("help").info
    assert info[cal.KEY] == r["threshold"] and info["abstain_calibration"]["chunks"] == 3
    on, off = cal.top_dense(kb, "help", ON_TOPIC), cal.top_dense(kb, "help", OFF_TOPIC)
    assert max(off) < r["threshold"] <= min(on) and r["balanced_accuracy"] == 1.0
    assert cal.threshold_of(kb, "help") == r["threshold"]


def test_synthetic_queries_are_first_sentences_of_sampled_chunks(kb):
    qs = cal.synthetic_queries(kb, "help", n=10)
    assert len(qs) == 3  # only three chunks to sample
    texts = {q for q, _ in qs}
    assert "Invoices are sent on the first day of each month." in texts
    for q, rel in qs:  # each query's relevant item is the chunk it came from
        assert kb.search("help", q, k=1, mode="dense", groups=None)[0].chunk_id == int(
            next(iter(rel)))


def _set(kbs, threshold, chunks=3):
    kbs.update_info("help", lambda info: info.update(
        {cal.KEY: threshold, "abstain_calibration": {"chunks": chunks}}))


def test_ask_abstains_below_the_learned_threshold_and_answers_above(kb, tiny):
    on = cal.top_dense(kb, "help", ON_TOPIC[:1])[0]
    off = cal.top_dense(kb, "help", OFF_TOPIC[:1])[0]
    assert off < on
    _set(kb, (on + off) / 2)
    a = ask(ON_TOPIC[0], tiny, "help", **KW)
    assert a.found and a.sources[0].source.endswith("wifi.md")
    b = ask(OFF_TOPIC[0], tiny, "help", **KW)
    assert not b.found and b.text == NOTHING_FOUND and b.sources == []
    # a threshold above every score abstains on the on-topic question too
    _set(kb, on + 0.01)
    assert not ask(ON_TOPIC[0], tiny, "help", **KW).found
    # an explicit score_threshold is the caller's: the learned one is not applied
    assert ask(ON_TOPIC[0], tiny, "help", **KW, score_threshold=0.0).found


def test_a_base_without_calibration_is_unchanged(kb, tiny):
    assert cal.threshold_of(kb, "help") is None
    for q in (ON_TOPIC[0], OFF_TOPIC[0]):
        default = ask(q, tiny, "help", **KW)
        before = ask(q, tiny, "help", **KW, score_threshold=0.3)
        assert (default.found, default.text, [h.chunk_id for h in default.sources]) == (
            before.found, before.text, [h.chunk_id for h in before.sources])


def test_a_threshold_learned_on_a_much_smaller_base_is_not_used(kb):
    _set(kb, 0.5, chunks=1)  # learned at 1 chunk; the base now holds 3
    assert cal.threshold_of(kb, "help") is None
    _set(kb, 0.5, chunks=2)
    assert cal.threshold_of(kb, "help") == 0.5


def test_weak_for_the_servers_grounded_path(kb):
    hits = kb.search("help", OFF_TOPIC[0], k=3)
    assert not cal.weak(kb, [kb.get("help").id], hits)  # no threshold: never weak
    _set(kb, cal.best_dense(hits) + 0.01)
    assert cal.weak(kb, [kb.get("help").id], hits)
    _set(kb, cal.best_dense(hits) - 0.01)
    assert not cal.weak(kb, [kb.get("help").id], hits) and not cal.weak(kb, ["help"], [])


def test_kb_calibrate_cli(kb, tmp_path, capsys):
    off = tmp_path / "off.txt"
    off.write_text("\n".join(OFF_TOPIC) + "\n")
    code, out, err = run_cli(capsys, "kb", "calibrate", "help", "--off-topic", str(off))
    assert code == 0, err
    assert "abstain below dense cosine" in out and "3 synthetic" in out
    assert all(len(line) <= 80 for line in out.splitlines())
    assert cal.KEY in kb.get("help").info
    code, out, _ = run_cli(capsys, "kb", "calibrate", "help", "--clear")
    assert code == 0 and cal.KEY not in kb.get("help").info
    code, _, err = run_cli(capsys, "kb", "calibrate", "help", "--off-topic",
                           str(tmp_path / "missing.txt"))
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_the_servers_grounded_answer_abstains_below_the_stores_threshold(kb, tiny_long,
                                                                        monkeypatch):
    from afinar.models.generation import GenerationResult
    from afinar.server.app import create_app
    from afinar.server.routes_responses import grounded_chat

    class Canned:  # the answer, without generating
        def __init__(self, lm):
            pass

        def chat(self, messages, params=None):
            return GenerationResult("Hold the reset button [1].", "stop", 50, 6, 0)

    monkeypatch.setattr("afinar.server.routes_responses.Generator", Canned)
    app = create_app(auth=False)
    tool = {"type": "file_search", "vector_store_ids": [kb.get("help").id]}
    msgs = [{"role": "user", "content": ON_TOPIC[0]}]
    on = cal.top_dense(kb, "help", ON_TOPIC[:1])[0]

    def answer():
        return grounded_chat(app, "tiny-long", msgs, tool, SamplingParams(max_tokens=8),
                             groups=None)[0]

    assert answer() == "Hold the reset button [1]."  # no threshold: as before
    _set(kb, on + 0.01)
    assert answer() == NOTHING_FOUND
    _set(kb, on - 0.01)
    assert answer() == "Hold the reset button [1]."
