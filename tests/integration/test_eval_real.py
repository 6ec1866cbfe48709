"""The five-way evaluation on the embedded model and the support example: the format needs
fine-tuning, the facts need retrieval, and the measured table (not a rule of thumb) must say so."""

from pathlib import Path

import pytest

from afinar.evals import load_config, run
from afinar.rag.kb import KnowledgeBases
from afinar.settings import get_settings
from afinar.store.files import Files
from afinar.tuning import Jobs
from afinar.tuning.runner import JobRunner

pytestmark = pytest.mark.integration
SUPPORT = Path(__file__).resolve().parents[2] / "examples" / "support"


def test_support_needs_both_and_the_advisor_says_so(home):
    KnowledgeBases().create("acme-support")
    KnowledgeBases().add("acme-support", sorted((SUPPORT / "kb").glob("*.md")))
    f = Files().create_from_path(SUPPORT / "train.jsonl", "fine-tune")
    # 10 steps (one epoch of batch 8, twice the default learning rate), set explicitly: CI
    # minutes. `auto` (batch 1, 240 steps for 80 tickets, what `make demo` runs) costs many times
    # more on 2 cores. Measured (8 cases): fine_tuned_rag json_match 0.75 after these 10 steps
    # (146 s of training) and 1.00 after 30 steps of the default rate (449 s); every other
    # strategy 0.00, so the assertions below hold with a margin of 0.45
    job = Jobs().create(model="smollm2-135m-instruct", training_file=f.id, seed=0,
                        suffix="support", hyperparameters={
                            "n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 2})
    assert JobRunner(Jobs().get(job.id), get_settings(), "test").run() == "succeeded", \
        Jobs().get(job.id).error
    # 8 cases (two products) and no forgetting check (tested on the tiny model): CI minutes
    cfg = load_config(SUPPORT / "eval.yaml", limit=8, forgetting=False).with_fine_tuned(
        [Jobs().get(job.id).fine_tuned_model])
    s = run(cfg).summary()
    rows = {r["type"]: r for r in s["strategies"]}

    def m(type_, metric):
        return rows[type_]["metrics"][metric]["mean"]

    print({t: {k: round(v["mean"], 2) for k, v in r["metrics"].items() if v["mean"] is not None}
           for t, r in rows.items()}, s["advice"])
    assert m("base", "json_valid") <= 0.2  # the base model answers in prose
    assert m("fine_tuned", "json_valid") >= 0.8  # fine-tuning fixed the format
    assert m("rag", "contains_all") >= m("base", "contains_all") + 0.3  # retrieval brings facts
    assert m("rag", "retrieval_recall") >= 0.9
    assert m("fine_tuned_rag", "json_match") >= m("fine_tuned", "json_match") + 0.3
    assert m("fine_tuned_rag", "json_match") >= m("rag", "json_match") + 0.3
    assert s["advice"]["recommendation"] == rows["fine_tuned_rag"]["name"]
