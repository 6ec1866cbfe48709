"""Evaluation metrics (table-driven over every entry of the METRICS registry, the judge with the
tiny model), bootstrap intervals, and the advisor on constructed tables: a format task
fine-tuning must win, a fact task RAG must win, a tie broken by cost, and no recommendation that
contradicts its table."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from afinar.errors import InvalidRequest
from afinar.evals import advisor, table
from afinar.evals.cases import Case
from afinar.evals.metrics import METRICS, Metric, Prediction, Score, bootstrap_ci, build


def case(reference: str, **meta) -> Case:
    return Case("line-1", 1, [{"role": "user", "content": "q"}], reference, meta)


SRC = [{"source": "docs/acme-x300.md", "text": "The X300 needs a 12 V power adapter.",
        "chunk_id": 1}]
SCHEMA = {"type": "object", "properties": {"topic": {"enum": ["power", "reset"]}},
          "required": ["topic"]}
LABELS = {"labels": ["power", "reset", "setup"], "field": "topic"}

GRADER = {"type": "string_check", "name": "has_reference", "operation": "like",  # OpenAI's shape
          "input": "{{ sample.output_text }}", "reference": "{{ item.reference }}"}
# (metric spec, answer, reference, metadata, sources, expected value or None, expected note)
CASES = [
    ("exact_match", " Paris ", "Paris", {}, None, 1.0, None),
    ("exact_match", "paris", "Paris", {}, None, 0.0, None),
    ("normalized_exact_match", "The Paris!", "paris", {}, None, 1.0, None),
    ("normalized_exact_match", "Lyon", "paris", {}, None, 0.0, None),
    ("token_f1", "the big red fox", "a red fox", {}, None, 0.8, None),
    ("token_f1", "blue", "red fox", {}, None, 0.0, None),
    ("rouge_l", "the cat sat on the mat", "the cat sat on the mat", {}, None, 1.0, None),
    ("rouge_l", "dogs bark", "the cat sat", {}, None, 0.0, None),
    ({"name": "label_accuracy", **LABELS}, '{"topic": "power"}', '{"topic": "power"}', {}, None,
     1.0, None),
    ({"name": "label_accuracy", **LABELS}, "It is about the reset button", '{"topic": "reset"}',
     {}, None, 1.0, None),
    ({"name": "label_accuracy", **LABELS}, "powr", '{"topic": "power"}', {}, None, 1.0, None),
    ({"name": "label_accuracy", **LABELS}, "setup, I think", '{"topic": "power"}', {}, None, 0.0,
     "said: setup"),
    ({"name": "label_accuracy", **LABELS}, "no idea", '{"topic": "power"}', {}, None, 0.0,
     "unparsable"),
    ({"name": "label_accuracy", **LABELS}, "power", "weather", {}, None, None, None),
    ("json_valid", '{"a": 1}', "x", {}, None, 1.0, None),
    ("json_valid", 'Sure! {"a": 1}', "x", {}, None, 0.0, None),
    ({"name": "json_schema_valid", "schema": SCHEMA}, '{"topic": "power"}', "x", {}, None, 1.0,
     None),
    ({"name": "json_schema_valid", "schema": SCHEMA}, '{"topic": "wifi"}', "x", {}, None, 0.0,
     "schema: 'wifi' is not one of ['power', 'reset']"),
    ({"name": "json_schema_valid", "schema": SCHEMA}, "topic: power", "x", {}, None, 0.0,
     "not JSON"),
    ("json_match", '{"answer": "12 V.", "topic": "Power"}', '{"topic": "power", "answer": "12 V"}',
     {}, None, 1.0, None),
    ("json_match", '{"topic": "power", "answer": "9 V"}', '{"topic": "power", "answer": "12 V"}',
     {}, None, 0.0, "wrong: answer"),
    ("json_match", "12 V", '{"topic": "power", "answer": "12 V"}', {}, None, 0.0,
     "not a JSON object"),
    ("json_match", "12 V", "plain reference", {}, None, None, None),
    ("contains_all", "It needs 12 V, see the X300 page", "x", {"must_contain": ["12 V", "x300"]},
     None, 1.0, None),
    ("contains_all", "It needs 9 V", "x", {"must_contain": ["12 V"]}, None, 0.0, "missing: 12 V"),
    ("contains_all", "anything", "x", {}, None, None, None),
    ("retrieval_recall", "x", "x", {"gold_sources": ["acme-x300.md"]}, SRC, 1.0, None),
    ("retrieval_recall", "x", "x", {"gold_sources": ["acme-m2.md"]}, SRC, 0.0,
     "gold not retrieved"),
    ("retrieval_recall", "x", "x", {"gold_sources": ["acme-m2.md"]}, None, None, None),
    ("citation_support", "The X300 needs a 12 V adapter [1].", "x", {}, SRC, 1.0, None),
    ("citation_support", "The X300 needs a 12 V adapter. Bananas are yellow fruit.", "x", {}, SRC,
     0.5, "unsupported sentence"),
    ("citation_support", "anything", "x", {}, None, None, None),
    ({"name": "grader", "grader": GRADER}, "It needs 12 V", "12 V", {}, None, 1.0, None),
    ({"name": "grader", "grader": GRADER}, "It needs 9 V", "12 V", {}, None, 0.0, None),
    ({"name": "grader", "grader": {**GRADER, "reference": "{{ item.volts }}"}}, "It needs 9 V",
     "x", {"volts": "9 V"}, None, 1.0, None),  # the case's metadata is the item too
    ({"name": "grader", "grader": {**GRADER, "reference": "{{ item.nope }}"}}, "9 V", "x", {},
     None, 0.0, "invalid_variable: item.nope: no such variable"),
]


@pytest.mark.parametrize("spec,answer,ref,meta,sources,value,note", CASES)
def test_metric(spec, answer, ref, meta, sources, value, note):
    s = build(spec).score(Prediction(answer, sources=sources), case(ref, **meta))
    if value is None:
        assert s is None
    else:
        assert s.value == pytest.approx(value, abs=1e-6)
        assert s.note == note


# Metrics that grade with a model: scored on the tiny model below, not from CASES.
MODEL_GRADERS = {"judge": {"model": "tiny-long"}}  # its prompt needs the longer window
# The options a metric cannot be built without.
NEEDS = {"label_accuracy": LABELS, "json_schema_valid": {"schema": SCHEMA},
         "grader": {"grader": GRADER}}


@pytest.mark.parametrize("name", METRICS.names())
def test_every_registered_metric(name):
    """A new metric (built in or from a plugin) is covered here as soon as it registers: it needs
    rows in CASES (or an entry in MODEL_GRADERS), a one-line description for the CLI help, and
    options refused as one clear error."""
    cls = METRICS.get(name)
    assert issubclass(cls, Metric) and cls.name == name
    assert cls.description and "\n" not in cls.description and len(cls.description) <= 90
    rows = [c for c in CASES if (c[0] if isinstance(c[0], str) else c[0]["name"]) == name]
    assert rows or name in MODEL_GRADERS, f"metric {name} has no rows in CASES"
    if rows:  # two outcomes at least: a metric that always says the same would pass one
        assert len({c[5] for c in rows}) >= 2, f"metric {name}: rows of one outcome only"
    with pytest.raises(InvalidRequest) as e:
        build({"name": name, **NEEDS.get(name, {}), **MODEL_GRADERS.get(name, {}),
               "no_such_option": 1})
    assert name in e.value.message and e.value.param.startswith("metrics")


@pytest.mark.parametrize("name", sorted(MODEL_GRADERS))
def test_model_graders_grade_with_the_model_they_are_given(name, tiny_long):
    grader = build({"name": name, **MODEL_GRADERS[name]})
    with pytest.raises(InvalidRequest, match="needs a model loader"):
        grader.score(Prediction("12 V"), case("12 V"))
    asked = []
    grader.loader = lambda m: asked.append(m) or tiny_long  # as the runner sets it
    s = grader.score(Prediction("It needs a 12 V adapter."), case("12 V"))
    assert asked == ["tiny-long"]
    assert s.value in (0.0, 1.0) and isinstance(s.note, str) and len(s.note) <= 120


def test_bad_metric_specs_are_refused_clearly():
    with pytest.raises(InvalidRequest) as e:
        build("bleu")
    assert e.value.message.startswith("unknown metric 'bleu'; known: citation_support, ")
    assert e.value.code == "unknown_metric" and e.value.param == "metrics"
    with pytest.raises(InvalidRequest, match="did you mean 'rouge_l'"):
        build("rouge-l")
    with pytest.raises(InvalidRequest, match="needs labels"):
        build("label_accuracy")
    with pytest.raises(InvalidRequest, match="needs schema"):
        build("json_schema_valid")
    with pytest.raises(InvalidRequest, match="exact_match takes no options"):
        build({"name": "exact_match", "k": 3})


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_cases():
    rng = np.random.default_rng(1)
    small = rng.random(20) < 0.6
    large = rng.random(2000) < 0.6
    lo_s, hi_s = bootstrap_ci(small, seed=3)
    lo_l, hi_l = bootstrap_ci(large, seed=3)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 4
    assert bootstrap_ci(small, seed=3) == (lo_s, hi_s)  # seeded: reproducible
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)


# -- the advisor on constructed tables --------------------------------------------------------

def constructed(columns: dict[str, dict], n: int = 40, main: str = "json_match"):
    """A summary built by the real table code from per-case scores: ``columns`` maps a strategy
    name to {"type", metric: hit-rate, "tokens", "latency", "training_s"}; hits are placed
    deterministically so rates are exact."""
    cases = [Case(f"line-{i}", i, [{"role": "user", "content": f"q{i}"}], "r") for i in range(n)]
    metrics = sorted({k for c in columns.values() for k in c
                      if k not in ("type", "tokens", "latency", "training_s")})
    preds, scores, meta = {}, {}, []
    for name, col in columns.items():
        preds[name], scores[name] = {}, {}
        for i, c in enumerate(cases):
            preds[name][c.id] = Prediction("x", prompt_tokens=col.get("tokens", 100),
                                           completion_tokens=10,
                                           latency_s=col.get("latency", 1.0), generation_s=1.0)
            scores[name][c.id] = {m: Score(float(i < round(col[m] * n))) for m in metrics}
        row = {"name": name, "type": col["type"], "model": f"m-{name}",
               "fine_tuned": col["type"].startswith("fine_tuned"), "uses_kb": "rag" in col["type"]}
        if row["fine_tuned"]:
            row["training"] = {"training_s": col.get("training_s", 300), "trained_tokens": 9000}
        meta.append(row)
    return table.summarize(meta, cases, preds, scores, metrics, main)


def test_format_task_fine_tuning_wins_and_says_why():
    s = constructed({
        "base": {"type": "base", "json_match": 0.0, "json_valid": 0.05, "contains_all": 0.1},
        "few_shot": {"type": "few_shot", "json_match": 0.2, "json_valid": 0.5,
                     "contains_all": 0.1, "tokens": 300},
        "rag": {"type": "rag", "json_match": 0.0, "json_valid": 0.05, "contains_all": 0.15,
                "tokens": 400},
        "fine_tuned": {"type": "fine_tuned", "json_match": 0.9, "json_valid": 0.95,
                       "contains_all": 0.1},
    })
    a = advisor.advise(s)
    assert a["recommendation"] == "fine_tuned"
    text = " ".join(a["reasons"])
    assert "wrong format (valid JSON on 5% of cases)" in text
    assert "fine-tuning fixed the format on 95% (fine_tuned)" in text
    assert "RAG added no json_match" in text
    assert a["verdict"].startswith("Fine-tune")


def test_fact_task_rag_wins_and_says_why():
    s = constructed({
        "base": {"type": "base", "json_match": 0.1, "json_valid": 0.95, "contains_all": 0.1},
        "rag": {"type": "rag", "json_match": 0.8, "json_valid": 0.95, "contains_all": 0.85,
                "tokens": 400},
        "fine_tuned": {"type": "fine_tuned", "json_match": 0.15, "json_valid": 1.0,
                       "contains_all": 0.1},
    })
    a = advisor.advise(s)
    assert a["recommendation"] == "rag"
    text = " ".join(a["reasons"])
    assert "Retrieval supplied facts the model lacks: rag holds the required facts on 85%" in text
    assert "already answers in the right format" in text
    assert a["verdict"].startswith("RAG")


def test_a_tie_is_broken_by_cost():
    s = constructed({
        "base": {"type": "base", "json_match": 0.70, "tokens": 100},
        "few_shot": {"type": "few_shot", "json_match": 0.72, "tokens": 600},
        "fine_tuned": {"type": "fine_tuned", "json_match": 0.75, "tokens": 100},
    })
    assert s["paired"]["best"] == "fine_tuned"
    a = advisor.advise(s)
    assert a["recommendation"] == "base"  # inside the interval, no training, fewest tokens
    assert set(a["tied"]) == {"base", "few_shot", "fine_tuned"}
    assert "a tie broken by cost" in a["reasons"][0]
    assert "needs no training" in a["reasons"][0]


def test_a_clear_winner_is_not_overruled_by_cost():
    s = constructed({
        "base": {"type": "base", "json_match": 0.05},
        "fine_tuned_rag": {"type": "fine_tuned_rag", "json_match": 0.9, "tokens": 500},
    })
    a = advisor.advise(s)
    assert a["recommendation"] == "fine_tuned_rag" and a["tied"] == ["fine_tuned_rag"]
    assert "No other strategy is within its 95% interval" in a["reasons"][0]


def test_the_advice_never_contradicts_its_table():
    rnd = random.Random(5)
    types = ["base", "few_shot", "rag", "fine_tuned", "fine_tuned_rag"]
    for _ in range(25):
        cols = {t: {"type": t, "json_match": rnd.choice([0, .1, .3, .5, .55, .6, .9]),
                    "json_valid": rnd.random(), "tokens": rnd.randrange(50, 900)}
                for t in rnd.sample(types, rnd.randrange(2, 6))}
        s = constructed(cols, n=rnd.choice([10, 30, 60]))
        a = advisor.advise(s)
        pick, best = a["recommendation"], s["paired"]["best"]
        d = s["paired"]["diffs"][pick]
        assert pick == best or d["lo"] <= 0 <= d["hi"]  # the best, or tied with it
        means = {r["name"]: r["metrics"]["json_match"]["mean"] for r in s["strategies"]}
        assert means[best] == max(means.values())
        for r in a["reasons"]:  # every percentage quoted is a measured one
            for pct in [int(x) for x in __import__("re").findall(r"(\d+)%", r)
                        if "interval" not in r]:
                measured = {round(100 * v["mean"]) for row in s["strategies"]
                            for v in row["metrics"].values() if v["mean"] is not None}
                assert pct in measured or pct == 95, (r, pct)


def test_no_scores_no_recommendation():
    a = advisor.advise({"main_metric": "m", "strategies": [], "paired": {}})
    assert a["recommendation"] is None and "nothing to recommend" in a["reasons"][0]


def test_summary_is_json_serialisable():
    s = constructed({"base": {"type": "base", "json_match": 0.5},
                     "rag": {"type": "rag", "json_match": 0.6}})
    json.dumps(s)


def test_a_label_task_reads_format_from_unparsable_answers():
    cases = [Case(f"line-{i}", i, [{"role": "user", "content": "q"}], "1") for i in range(20)]
    lab = build({"name": "label_accuracy", "labels": ["0", "1"]})
    answers = {"base": ["Sure, here is my analysis"] * 16 + ["1"] * 4,
               "fine_tuned": ["1"] * 18 + ["0"] * 2}
    preds = {n: {c.id: Prediction(a) for c, a in zip(cases, t)} for n, t in answers.items()}
    scores = {n: {c.id: {"label_accuracy": lab.score(preds[n][c.id], c)} for c in cases}
              for n in preds}
    meta = [{"name": "base", "type": "base", "model": "b", "fine_tuned": False},
            {"name": "fine_tuned", "type": "fine_tuned", "model": "t", "fine_tuned": True,
             "training": {"training_s": 60}}]
    s = table.summarize(meta, cases, preds, scores, ["label_accuracy"], "label_accuracy")
    a = advisor.advise(s)
    assert a["recommendation"] == "fine_tuned"
    assert ("The base model answers in the wrong format (an answer from the label set on 20% of "
            "cases); fine-tuning fixed the format on 100% (fine_tuned).") in a["reasons"]


def test_rag_that_helps_on_the_main_metric_is_said_so():
    s = constructed({"base": {"type": "base", "token_f1": 0.2},
                     "rag": {"type": "rag", "token_f1": 0.7, "tokens": 400}}, main="token_f1")
    a = advisor.advise(s)
    assert a["recommendation"] == "rag"
    assert "RAG raised token_f1 from 0.20 (base) to 0.70 (rag)." in a["reasons"]


def test_load_beside_a_timed_section_is_measured_and_reported(tmp_path):
    """Another process busy on a core while a strategy is timed: the section is 'under load',
    the note says so, and the advisor stops breaking ties on latency."""
    import subprocess
    import sys
    import time

    from afinar.evals import timing
    from afinar.settings import Settings

    if timing._busy_ticks() is None:
        pytest.skip("no /proc/stat on this system: other-process load is reported as unknown")
    settings = Settings(home=tmp_path)
    spin = subprocess.Popen([sys.executable, "-c",
                             "import time\nt=time.time()\nwhile time.time()-t<3: pass"])
    try:
        time.sleep(0.3)
        with timing.quiet(settings, "base") as load:
            load.begin()
            time.sleep(1.5)
    finally:
        spin.wait()
    d = load.as_dict()
    assert d["other_cores"] > timing.BUSY_CORES and d["under_load"]
    assert d["ended_at"] - d["started_at"] >= 1.4
    note = timing.describe([d])
    assert "under load" in note and "base" in note and "cores busy elsewhere" in note


def test_latency_measured_under_load_does_not_break_ties():
    cols = {"base": {"type": "base", "json_match": 0.70, "tokens": 100, "latency": 3.0},
            "rag": {"type": "rag", "json_match": 0.71, "tokens": 100, "latency": 1.0}}
    s = constructed(cols)
    s["latency"] = {"under_load": False, "note": "quiet", "sections": []}
    assert advisor.advise(s)["recommendation"] == "rag"  # same tokens: faster wins
    s["latency"] = {"under_load": True, "sections": [],
                    "note": "Measured under load, so latency is not used to break ties."}
    a = advisor.advise(s)
    assert a["recommendation"] == "base"  # first of equals; latency ignored
    assert any("not used to break ties" in r for r in a["reasons"])
