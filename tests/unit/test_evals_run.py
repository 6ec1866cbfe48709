"""An evaluation end to end on the tiny model: all five strategies (a real LoRA job for the
fine-tuned ones, a real knowledge base for the RAG ones), every metric including the judge, cost
columns, the forgetting check, the HTML/JSONL reports, resume after a crash, the CLI, and clear
errors for bad test files and configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from afinar.errors import AfinarError, InvalidRequest, NotFound
from afinar.evals import get_run, list_runs, parse_config, run
from afinar.evals.cases import read_cases
from afinar.evals.report import render_html, write_jsonl
from afinar.evals.strategies import Context, StrategySpec, build
from afinar.models import Catalog
from afinar.models.generation import Generator
from tests.helpers import home_at, run_cli

SYSTEM = "You answer questions about Acme routers."
DOCS = {"acme-x300.md": "# X300\n\n## Power\n\nThe X300 needs a 12 V power adapter.\n",
        "acme-m2.md": "# M2\n\n## Reset\n\nHold the reset button of the M2 for 8 seconds.\n",
        "billing.md": "# Billing\n\n## Refunds\n\nRefunds are paid within 30 days.\n"}
TRAIN = [("Which adapter does the X100 need?", "9 V"), ("How do I reset the X100?", "5 seconds"),
         ("When are refunds paid?", "30 days"), ("What is the X100 warranty?", "24 months"),
         ("Which adapter does the M1 need?", "19 V"), ("How do I reset the M1?", "10 seconds"),
         ("Which adapter does the C5 need?", "5 V"), ("How do I reset the C5?", "15 seconds"),
         ("What is the M1 warranty?", "36 months"), ("Can I get my money back?", "30 days")]
TEST = [("Which adapter does the X300 need?", "12 V", "acme-x300.md"),
        ("How long do I hold reset on the M2?", "8 seconds", "acme-m2.md"),
        ("How fast are refunds paid?", "30 days", "billing.md")]


def chat(q, a):
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q},
                         {"role": "assistant", "content": a}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_template):
    """One home for the module: the tiny model (2,048-token window), a knowledge base and a
    fine-tuned LoRA model trained by a real job."""
    root = tmp_path_factory.mktemp("evals")
    with home_at(root / "home"):
        yield _world(root, tiny_model_template)


def _world(root: Path, tiny_model_template: Path) -> dict:
    from afinar.rag.kb import KnowledgeBases
    from afinar.settings import get_settings
    from afinar.store.files import Files
    from afinar.tuning.jobs import Jobs
    from afinar.tuning.runner import JobRunner

    folder = Path(shutil.copytree(tiny_model_template, root / "tiny-long"))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["max_position_embeddings"] = 2048
    (folder / "config.json").write_text(json.dumps(cfg))
    Catalog().add("tiny-long", folder)
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    KnowledgeBases().create("acme")
    KnowledgeBases().add("acme", sorted(docs.glob("*.md")))
    train, test = root / "train.jsonl", root / "test.jsonl"
    train.write_text("".join(json.dumps(chat(q, a)) + "\n" for q, a in TRAIN))
    test.write_text("".join(json.dumps({**chat(q, a), "metadata": {
        "gold_sources": [src], "must_contain": [a]}}) + "\n" for q, a, src in TEST))
    f = Files().create_from_path(train, "fine-tune")
    job = Jobs().create(model="tiny-long", training_file=f.id, suffix="acme", seed=0,
                        hyperparameters={"n_epochs": 2, "batch_size": 2})
    status = JobRunner(Jobs().get(job.id), get_settings(), "test").run()
    assert status == "succeeded", Jobs().get(job.id).error
    ft = Jobs().get(job.id).fine_tuned_model
    return {"root": root, "train": train, "test": test, "ft": ft, "job": job.id}


METRICS = ["exact_match", "normalized_exact_match", "token_f1", "rouge_l", "json_valid",
           "contains_all", "retrieval_recall", "citation_support",
           {"name": "label_accuracy", "labels": ["12 V", "8 seconds", "30 days"]},
           {"name": "judge", "model": "tiny-long"}]


def config(world, **over):
    raw = {"name": "acme", "test_file": str(world["test"]), "train_file": str(world["train"]),
           "model": "tiny-long", "knowledge_base": "acme", "generation": {"max_tokens": 6},
           "strategies": ["base", {"type": "few_shot", "k": 2}, {"type": "rag", "k": 2},
                          {"type": "fine_tuned", "jobs": [world["job"]]},
                          {"type": "fine_tuned_rag", "models": [world["ft"]], "k": 2}],
           "metrics": METRICS, "main_metric": "token_f1", "bootstrap_samples": 200}
    raw.update(over)
    return parse_config(raw)


def test_all_five_strategies_every_metric_costs_forgetting_and_reports(world, tmp_path):
    ev = run(config(world))
    s = ev.summary()
    rows = {r["name"]: r for r in s["strategies"]}
    tag = world["ft"].split(":", 3)[3]
    assert list(rows) == ["base", "few_shot", "rag", f"fine_tuned[{tag}]",
                          f"fine_tuned_rag[{tag}]"]
    n = len(TEST)
    for r in rows.values():
        assert r["cost"]["errors"] == 0
        assert r["metrics"]["token_f1"]["n"] == n and r["metrics"]["judge"]["n"] == n
        assert r["cost"]["completion_tokens"] > 0 and r["cost"]["latency_p50_s"] > 0
        assert r["cost"]["tokens_per_s"] > 0
    # what few-shot examples and sources add to each prompt, measured in tokens
    assert rows["base"]["cost"]["added_prompt_tokens"] == 0
    assert rows[f"fine_tuned[{tag}]"]["cost"]["added_prompt_tokens"] == 0
    assert rows["few_shot"]["cost"]["added_prompt_tokens"] > 20
    assert rows["rag"]["cost"]["added_prompt_tokens"] > 20
    assert rows["few_shot"]["cost"]["prompt_tokens"] == pytest.approx(
        rows["base"]["cost"]["prompt_tokens"] + rows["few_shot"]["cost"]["added_prompt_tokens"])
    # retrieval metrics apply to the strategies that retrieved, and only to them
    assert rows["base"]["metrics"]["retrieval_recall"]["n"] == 0
    assert rows["rag"]["metrics"]["retrieval_recall"]["n"] == n
    assert rows["rag"]["metrics"]["citation_support"]["n"] == n
    # the fine-tuned strategies carry their job's training cost
    tr = rows[f"fine_tuned[{tag}]"]["cost"]
    assert tr["job"] == world["job"] and tr["trained_tokens"] > 0 and tr["training_s"] >= 0
    # forgetting: the tuned model against its base, on general text and questions
    (f,) = s["forgetting"]
    assert f["model"] == world["ft"] and f["base_model"] == "tiny-long"
    assert f["perplexity_base"] > 1 and f["perplexity_tuned"] > 1 and f["n_questions"] == 20
    # advice from the table
    assert s["advice"]["recommendation"] in rows
    # per-example view: every case, every strategy, flips against base
    assert len(s["cases"]) == n
    for c in s["cases"]:
        assert set(c["results"]) == set(rows)
        assert c["results"]["base"]["flip"] is None
        assert c["results"]["rag"]["sources"]
    html = render_html(s)
    for name in rows:
        assert name in html
    assert html.count("<svg") >= len(METRICS) + 2
    assert "<script src" not in html and "<link" not in html  # self-contained
    out = write_jsonl(s, tmp_path / "cases.jsonl")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == n * len(rows) and {"strategy", "text", "scores", "flip"} <= set(lines[0])


def test_the_fine_tuned_strategy_answers_with_the_adapter(world):
    from afinar.models import ModelCache

    cache = ModelCache()
    ctx = Context(load=lambda m: cache.get(m), default_model="tiny-long",
                  generation={"max_tokens": 6})
    case = read_cases(world["test"])[0]
    st = build(StrategySpec(type="fine_tuned", model=world["ft"]), ctx)
    p = st.answer(case)
    direct = Generator(cache.get(world["ft"])).chat(case.messages, st.params)
    assert p.text == direct.text and p.prompt_tokens == direct.prompt_tokens


def test_few_shot_picks_the_most_similar_training_examples(world):
    from afinar.models import ModelCache

    cache = ModelCache()
    ctx = Context(load=lambda m: cache.get(m), default_model="tiny-long",
                  train_file=str(world["train"]))
    st = build(StrategySpec(type="few_shot", k=2), ctx)
    case = read_cases(world["test"])[1]  # a reset question
    msgs, sources = st.prompt(case)
    assert sources is None
    shown = [m["content"] for m in msgs if m["role"] == "user"][:-1]
    assert len(shown) == 2 and all("reset" in q for q in shown)
    assert msgs[0]["role"] == "system" and msgs[-1] == case.messages[-1]


def test_system_and_user_template_shape_the_prompt(world):
    ctx = Context(load=None, default_model="tiny-long")
    st = build(StrategySpec(type="base", system="Be terse.", user_template="Ticket: {question}"),
               ctx)
    case = read_cases(world["test"])[0]
    msgs, _ = st.prompt(case)
    assert msgs == [{"role": "system", "content": "Be terse."},
                    {"role": "user", "content": f"Ticket: {case.question}"}]
    with pytest.raises(InvalidRequest, match="user_template needs"):
        build(StrategySpec(type="base", user_template="Ticket"), ctx)


def test_resume_after_a_crash_answers_only_what_is_missing(world):
    cfg = config(world, strategies=["base", "rag"], metrics=["token_f1"], forgetting=False)
    ev = run(cfg)
    preds = ev.path / "predictions.jsonl"
    lines = preds.read_text().splitlines()
    assert len(lines) == 2 * len(TEST)
    preds.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])  # a torn last line
    (ev.path / "summary.json").unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    ev._write_meta(status="running", pid=int(dead))
    assert get_run(ev.id).meta["status"] == "interrupted"
    assert any(r.id == ev.id and r.meta["status"] == "interrupted" for r in list_runs())
    calls = []
    orig = Generator.chat

    def counting(self, *a, **kw):
        calls.append(1)
        return orig(self, *a, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(Generator, "chat", counting)
    try:
        again = run(cfg, resume=ev.id)
    finally:
        mp.undo()
    assert again.id == ev.id and len(calls) == 2 * len(TEST) - 2
    assert get_run(ev.id).meta["status"] == "succeeded"
    assert all(r["metrics"]["token_f1"]["n"] == len(TEST) for r in again.summary()["strategies"])


def test_a_failing_run_is_marked_failed_not_running(world):
    cfg = config(world, strategies=[{"type": "fine_tuned", "model": "ft:nope:afinar:x:1"}],
                 metrics=["token_f1"])
    with pytest.raises(NotFound):
        run(cfg)
    failed = [r for r in list_runs() if r.meta["status"] == "failed"]
    assert failed and "nope" in failed[0].meta["error"]
    assert failed[0].meta["pid"] is None


@pytest.mark.parametrize("line,message", [
    ("not json", "test.jsonl:2: line: not JSON"),
    ('{"messages": [{"role": "user", "content": "q"}]}',
     "test.jsonl:2: messages: the last message must be the assistant's reference answer"),
    ('{"messages": [{"role": "robot", "content": "q"}]}', "test.jsonl:2: messages[0].role"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], '
     '"metadata": {"must_contain": "12 V"}}', "test.jsonl:2: metadata.must_contain"),
])
def test_bad_test_files_name_the_line_and_field(tmp_path, line, message):
    f = tmp_path / "test.jsonl"
    f.write_text(json.dumps(chat("q", "a")) + "\n" + line + "\n")
    with pytest.raises(InvalidRequest) as e:
        read_cases(f)
    assert message in str(e.value)


@pytest.mark.parametrize("over,message", [
    ({"strategies": ["magic"]}, "unknown strategy 'magic'"),
    ({"main_metric": "bleu"}, "main_metric 'bleu' is not among the metrics"),
    ({"strategies": [{"type": "rag", "knowledge_base": None}], "knowledge_base": None},
     "strategy rag needs a knowledge_base"),
    ({"strategies": [{"type": "few_shot"}], "train_file": None}, "needs a train_file"),
    ({"strategies": [{"type": "fine_tuned"}]}, "needs a fine-tuned model"),
    ({"strategies": [{"type": "base", "temperature": 0}]}, "strategies.0.temperature"),
])
def test_bad_configs_are_refused_clearly(world, over, message):
    with pytest.raises(AfinarError) as e:
        run(config(world, metrics=["token_f1"], **over))
    assert message in str(e.value)


def test_cli_run_report_and_list(world, tmp_path, capsys):
    yaml_file = tmp_path / "eval.yaml"
    yaml_file.write_text(
        f"name: cli\ntest_file: {world['test']}\nmodel: tiny-long\nknowledge_base: acme\n"
        "generation: {max_tokens: 4}\nstrategies: [base, rag]\nmetrics: [token_f1, contains_all]\n")
    html = tmp_path / "r.html"
    code, out, _ = run_cli(capsys, "eval", "run", str(yaml_file), "--limit", "2", "--html", str(html))
    assert code == 0
    assert "Recommendation:" in out and "token_f1" in out and html.is_file()
    run_id = out.split("afinar eval report ")[1].split()[0]
    assert get_run(run_id).meta["config"]["limit"] == 2
    jsonl = tmp_path / "r.jsonl"
    assert run_cli(capsys, "eval", "report", run_id, "--jsonl", str(jsonl))[0] == 0
    assert len(jsonl.read_text().splitlines()) == 2 * 2
    code, out, _ = run_cli(capsys, "eval", "list")
    assert code == 0 and run_id[:12] in out
    assert run_cli(capsys, "eval", "report", "evalrun-missing")[0] == 2
    assert os.environ["AFINAR_HOME"] in str(get_run(run_id).path)


def _spans(ev) -> dict[tuple[str, str], tuple[float, float]]:
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for name, preds in ev.predictions().items():
        ps = list(preds.values())
        out[(ev.id, name)] = (min(p.started_at for p in ps), max(p.ended_at for p in ps))
    return out


def test_timed_sections_of_two_concurrent_evaluations_never_overlap(world):
    """Latency is a tie-breaker, so no strategy may be timed while another one answers: two
    evaluations started together in one home (threads; processes share the same flock) must
    time their strategies one after another."""
    import threading

    from afinar.models import ModelCache
    from afinar.rag.kb import KnowledgeBases

    cfg = config(world, strategies=["base", {"type": "rag", "k": 2}], metrics=["token_f1"],
                 forgetting=False, generation={"max_tokens": 12})
    cache = ModelCache()
    cache.get("tiny-long")  # loaded once, before: what is tested is the timing, not loading
    KnowledgeBases().search("acme", "warm up", k=1)
    runs, errors = [], []
    go = threading.Barrier(2)

    def one():
        try:
            go.wait()
            runs.append(run(cfg, cache=cache))
        except Exception as e:  # reported below, not swallowed
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    spans = sorted({k: v for ev in runs for k, v in _spans(ev).items()}.items(),
                   key=lambda kv: kv[1][0])
    assert len(spans) == 4
    for (a, (_, a_end)), (b, (b_start, _)) in zip(spans, spans[1:]):
        assert a_end <= b_start, f"{a} was timed until {a_end}, {b} from {b_start}"
    for ev in runs:
        lat = ev.summary()["latency"]
        assert len(lat["sections"]) == 2 and "timed alone" in lat["note"]
        assert {s["strategy"] for s in lat["sections"]} == {"base", "rag"}
    # one of the two runs waited for the other's sections
    assert max(s["waited_s"] for ev in runs for s in ev.summary()["latency"]["sections"]) > 0


def test_runs_belong_to_a_project(world, capsys):
    """A run's project (``project:`` in the config, default ``default``): another project's run
    does not exist for it, as with keys, files and jobs."""
    ev = run(config(world, strategies=["base"], metrics=["token_f1"], forgetting=False,
                    project="acme-research", limit=1))
    assert ev.project == "acme-research"
    assert get_run(ev.id, project="acme-research").id == ev.id
    with pytest.raises(NotFound):
        get_run(ev.id, project="default")
    assert ev.id in {r.id for r in list_runs(project="acme-research")}
    assert ev.id not in {r.id for r in list_runs(project="default")}
    code, out, _ = run_cli(capsys, "eval", "list", "--project", "default")
    assert code == 0 and ev.id not in out
