"""Output that fits: every table and progress line readable at 80 columns, key values (ids,
numbers, intervals) whole, never cut to an ellipsis; copyable hints never hard-wrapped."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from rich.console import Console

from afinar.cli import common
from afinar.ids import new_id
from tests.helpers import run_cli

WIDTH = 80


@pytest.fixture
def at_80():
    """The CLI's consoles at 80 columns, as in a small terminal."""
    saved = [(c, c.width) for c in (common.console, common.err_console)]
    for c, _ in saved:
        c.width = WIDTH
    yield
    for c, width in saved:
        c.width = width


def fits(text: str, *whole: str) -> None:
    lines = text.splitlines()
    assert lines
    too_long = [ln for ln in lines if len(ln) > WIDTH]
    assert not too_long, "\n".join(too_long)
    assert "…" not in text, text
    for value in whole:
        assert value in text, f"{value!r} cut or wrapped in:\n{text}"


def _summary(metrics: list[str], names: list[str]) -> dict:
    rows = []
    for k, name in enumerate(names):
        rows.append({"name": name, "metrics": {
            m: {"mean": 0.1 * k + 0.01 * j, "lo": 0.05 * k, "hi": 0.1 * k + 0.2, "n": 24,
                "notes": {}} for j, m in enumerate(metrics)},
            "cost": {"prompt_tokens": 1234.0 + k, "completion_tokens": 40.0,
                     "added_prompt_tokens": 890.0 * k, "latency_p50_s": 19.84 - k,
                     "latency_p95_s": 25.0, "tokens_per_s": 10.9 + k,
                     "training_s": 412.0 if "fine" in name else None}})
    return {"main_metric": metrics[0], "n_cases": 24, "strategies": rows,
            "run": {"metrics": metrics}, "forgetting": [],
            "latency": {"note": "latency measured one strategy at a time"},
            "advice": {"recommendation": names[-1], "verdict": "clear winner",
                       "reasons": ["it is the best on exact_match by 0.20 [0.05, 0.35]"]}}


NAMES = ["base", "few_shot", "rag", "fine_tuned[ft:smollm2-135m-instruct:acme:8f3k2a]",
         "fine_tuned_rag"]
METRICS = ["exact_match", "rouge_l", "citation_support", "retrieval_recall"]


def test_eval_table_is_compact_at_80_columns_and_full_with_wide(at_80, capsys):
    from afinar.cli.eval_cmd import print_summary

    summary = _summary(METRICS, NAMES)
    print_summary(summary)
    out = capsys.readouterr().out
    main = [r["metrics"]["exact_match"] for r in summary["strategies"]]
    intervals = [f"{v['mean']:.2f} [{v['lo']:.2f},{v['hi']:.2f}]" for v in main]
    fits(out, *intervals, "19.84", "10.9", "412 s", "3560", "citation_support",
         "retrieval_recall", "fine_tuned_rag")
    assert "--wide" in out
    print_summary(summary, wide=True)
    wide = capsys.readouterr().out
    for r in summary["strategies"]:
        for m in METRICS:
            v = r["metrics"][m]
            assert f"{v['mean']:.2f} [{v['lo']:.2f},{v['hi']:.2f}]" in wide
    assert "prompt tok" in wide and max(map(len, wide.splitlines())) > WIDTH


def test_eval_table_with_one_metric_is_one_table(at_80, capsys):
    from afinar.cli.eval_cmd import print_summary

    print_summary(_summary(["accuracy"], NAMES[:3]))
    out = capsys.readouterr().out
    fits(out, "0.00 [0.00,0.20]", "0.20 [0.10,0.40]")
    assert "metric (mean)" not in out


def _render(progress, width=WIDTH) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(progress.get_renderable())
    return console.export_text()


def test_progress_lines_keep_the_count_and_eta_and_say_loading(at_80):
    from afinar.cli.common import StatsProgress, progress_columns

    console = Console(width=WIDTH, file=io.StringIO())
    bar = StatsProgress(*progress_columns("steps"), console=console)
    task = bar.add_task("loading model", total=None)
    text = _render(bar)
    fits(text, "loading model", "ETA")
    assert "None" not in text and "0/" not in text
    bar.stats = ("epoch 2  loss 0.423  acc 0.85  val 0.512  310 tok/s  " * 3).strip()
    bar.update(task, description="training", completed=500, total=1000)
    text = _render(bar)
    lines = text.splitlines()
    assert "500/1000 steps" in lines[0] and "ETA" in lines[0]
    assert lines[1].lstrip().startswith("epoch 2  loss 0.423")
    assert all(len(ln) <= WIDTH for ln in lines)

    evals = StatsProgress(*progress_columns("cases", 22), console=console)
    t = evals.add_task(NAMES[3], total=120, phase="loading model")
    text = _render(evals)
    assert "loading model" in text and "ETA" in text and max(map(len, text.splitlines())) <= 80
    evals.update(t, completed=60, phase=None)
    text = _render(evals)
    assert "60/120 cases" in text and "ETA" in text and max(map(len, text.splitlines())) <= 80


def _job(model: str, tuned: str | None, status: str, tokens: int | None):
    return SimpleNamespace(id=new_id("ftjob-"), status=status, model=model,
                           method={"type": "lora"}, fine_tuned_model=tuned,
                           trained_tokens=tokens)


def test_tune_list_fits(at_80, capsys, monkeypatch, home):
    import afinar.tuning

    jobs = [_job("smollm2-135m-instruct", "ft:smollm2-135m-instruct:support-bot:2k9x1q",
                 "succeeded", 1_234_567),
            _job("smollm2-135m-instruct", None, "running", None)]

    class Jobs:
        def list(self, limit=20):
            return jobs

    monkeypatch.setattr(afinar.tuning, "Jobs", Jobs)
    code, out, _ = run_cli(capsys, "tune", "list")
    assert code == 0
    fits(out, *(j.id for j in jobs), "ft:smollm2-135m-instruct:support-bot:2k9x1q",
         "succeeded", "1.2M")


def test_eval_list_fits(at_80, capsys, monkeypatch, home):
    import afinar.evals.runner as runner

    summary = {"advice": {"recommendation": NAMES[3]}}
    runs = [SimpleNamespace(id=new_id("eval_", 16), meta={"status": "succeeded",
                                                          "name": "support tickets, June"},
                            summary=lambda: summary)]
    monkeypatch.setattr(runner, "list_runs", lambda project=None: runs)
    code, out, _ = run_cli(capsys, "eval", "list")
    assert code == 0
    fits(out, runs[0].id, "succeeded")


def test_models_list_fits(at_80, capsys, home, tiny_model_dir):
    name = "support-bot-v2-registered"
    assert run_cli(capsys, "models", "add", name, str(tiny_model_dir))[0] == 0
    code, out, _ = run_cli(capsys, "models", "list")
    assert code == 0
    fits(out, name, "smollm2-135m-instruct", "all-minilm-l6-v2", "MiB")


def test_data_validate_tables_fit(at_80, capsys, home, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"question number {i}"},
                          {"role": "assistant", "content": f"answer {i}"}]} for i in range(12)]
    rows.append({"messages": [{"role": "wizard", "content": "x " * 200},
                              {"role": "assistant", "content": "y"}]})
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, _ = run_cli(capsys, "data", "validate", str(p), "--no-tokens")
    assert code == 1
    fits(out, "13", "messages[0].role")


def test_data_pii_table_fits(at_80, capsys, home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "pii.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "mail me at "
                                           "jonathan.somebody@example-company.com or call "
                                           "+44 20 7946 0958"}]}) + "\n")
    code, out, _ = run_cli(capsys, "data", "pii", p.name)
    assert code == 1
    fits(out, "EMAIL", "j***@example-company.com", "messages[0].content")


@pytest.fixture
def kb(home, tmp_path):
    from afinar.rag.kb import KnowledgeBases

    folder = tmp_path / "a-folder-with-a-long-name" / "and-another-level-of-folders"
    folder.mkdir(parents=True)
    (folder / "router-troubleshooting-guide.md").write_text(
        "# Router guide\n\n## Lights\n\nA blinking orange light means the router has no "
        "internet connection. Restart the router and wait two minutes.\n")
    kbs = KnowledgeBases()
    kbs.create("customer-support-knowledge-base")
    kbs.add("customer-support-knowledge-base", [folder], groups=["support", "engineering"])
    return kbs


def test_kb_tables_and_search_fit(at_80, capsys, kb):
    rec = kb.get("customer-support-knowledge-base")
    code, out, _ = run_cli(capsys, "kb", "list")
    assert code == 0
    fits(out, rec.id, "all-minilm-l6-v2")
    code, out, _ = run_cli(capsys, "kb", "docs", rec.name)
    assert code == 0
    fits(out, "router-troubleshooting-", "indexed" if "indexed" in out else "")
    code, out, _ = run_cli(capsys, "kb", "search", rec.name, "orange light", "-g", "support",
                           "--explain")
    assert code == 0
    lines = out.splitlines()
    assert all(len(ln) <= WIDTH for ln in lines), out
    assert lines[1].startswith("[1] ") and "router-troubleshooting-guide.md" in lines[1]


def test_copyable_hints_are_not_wrapped(capsys):
    console = Console(width=40, file=io.StringIO(), record=True)
    hint = "detached; the job goes on. Follow it with: afinar tune wait ftjob-abcdefghij0123"
    console.print(hint, soft_wrap=True, markup=False)
    assert hint in console.export_text()
    from afinar.cli.errors import print_error

    saved = common.err_console.width
    common.err_console.width = 40
    try:
        print_error("no model 'x'; known: smollm2-135m-instruct, all-minilm-l6-v2 (register "
                    "one with `afinar models add NAME PATH`)")
    finally:
        common.err_console.width = saved
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1


def test_keys_projects_and_audit_fit(home, at_80, capsys):
    from afinar.store.keys import ApiKeys

    a = ApiKeys().create("ops-admin-with-a-rather-long-name", admin=True)[0]
    b = ApiKeys().create("alice", "hr,staff,engineering,finance", project="acme-research")[0]
    code, out, _ = run_cli(capsys, "keys", "list")
    assert code == 0
    fits(out, a.id, b.id, "acme-research")
    code, out, _ = run_cli(capsys, "projects", "list")
    assert code == 0
    fits(out, "acme-research")
    code, out, _ = run_cli(capsys, "audit")
    assert code == 0 and all(len(ln) <= WIDTH for ln in out.splitlines())
