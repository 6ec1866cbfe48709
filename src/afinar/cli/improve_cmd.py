"""``afinar improve``: the improvement loop once (``afinar.evals.improve``): new feedback ->
dataset -> fine-tune -> evaluation -> promote or not, with a report of each step."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.table import Column, Table

from afinar.cli.common import add_schedule, console, err_console, existing_file, print_json


def _feedback(r: dict) -> str:
    f = r["feedback"]
    kinds = ", ".join(f"{n} {t}s" for t, n in sorted(f["by_type"].items()))
    return f"{f['new']} new items ({kinds}) on requests to {', '.join(f['models'])}"


def _export(r: dict) -> str:
    e = r["export"]
    out = f"{e['used']} of {e['feedback']} items used, {e['examples']} examples built"
    if e["duplicates"]:
        out += f", {e['duplicates']} duplicates removed"
    out += "; written: " + ", ".join(f"{k} {v}" for k, v in e["written"].items())
    for reason, n in e["dropped"].items():
        out += f"\ndropped {n}: {reason}"
    return out


def _job(r: dict) -> str:
    j = r["job"]
    out = f"{j['id']} ({j['method']} on {j['base']}): {j['status']}"
    if j.get("fine_tuned_model"):
        out += f"\n{j['fine_tuned_model']}"
    if j.get("trained_tokens"):
        out += f", {j['trained_tokens']} trained tokens"
    if j.get("error"):
        out += f"\n{j['error'].get('message')}"
    return out


def print_report(r: dict) -> None:
    """Each step on a row of a two-column table that folds within 80 columns, then the
    evaluation's table and the decision."""
    t = Table(Column("step", no_wrap=True), Column("result", overflow="fold", ratio=1),
              box=box.SIMPLE_HEAD, pad_edge=False, title=escape(
                  f"improve {r['id']}: alias {r['alias']} (was {r['model']})"),
              title_justify="left")
    t.add_row("feedback", escape(_feedback(r)))
    if r["method"]:
        t.add_row("method", escape(f"{r['method']['chosen']}: " + " ".join(
            r["method"]["reasons"])))
    if r["export"]:
        t.add_row("export", escape(_export(r)))
    if r["job"]:
        t.add_row("job", escape(_job(r)))
    console.print(t)
    if r["decision"]:
        from afinar.cli.promote_cmd import print_decision
        from afinar.evals.promotion import Decision

        print_decision(Decision(**r["decision"]), r["evaluation"] and {
            **r["evaluation"], "latency": None})
    elif r["dry_run"]:
        console.print("dry run: no job was created and nothing moved", markup=False)
    console.print(f"report: {r['path']}", markup=False, soft_wrap=True)


def _schedule(alias: str, eval_file: Path | None, every: str, dry_run: bool, as_json: bool,
              flags: list[tuple[str, object]]) -> None:
    """``--every``: the same command (with its eval file's absolute path) as a schedule the
    workers run (``afinar.store.schedules``), checked first as a run would be."""
    from afinar.errors import InvalidRequest
    from afinar.evals.improve import check_eval
    from afinar.models.aliases import Aliases
    from afinar.store.schedules import parse_duration

    if dry_run:
        raise InvalidRequest("--every schedules the loop itself: drop --dry-run", param="every")
    seconds = parse_duration(every, "--every")
    path = check_eval(Aliases(), alias, eval_file)  # an unknown alias or a bad eval: now
    argv = ["improve", "--alias", alias, "--eval", path]
    argv += [x for k, v in flags if v is not None for x in (k, str(v))]
    add_schedule(argv, every, seconds, as_json)


def improve(
    alias: str = typer.Option(..., "--alias", help="The alias to improve (afinar models alias)."),
    eval_file: Path = typer.Option(None, "--eval", help="eval.yaml with one strategy (default: "
                                   "the one this alias's last run used).", dir_okay=False,
                                   callback=existing_file),
    method: str = typer.Option("auto", "--method", help="auto (from the data: pairs -> dpo, "
                               "corrections -> sft, thumbs only -> kto), dpo, kto, sft, grpo."),
    grader: Path = typer.Option(None, "--grader", help="A grader (YAML/JSON, OpenAI's shape): "
                                "the promotion's gate.", dir_okay=False,
                                callback=existing_file),
    gate_min: float = typer.Option(0.5, "--gate-min", help="The grader's minimum mean score."),
    every: str = typer.Option(None, "--every", help="Register this command to run on a "
                              "schedule (30m, 1d, ...) by the worker, instead of now."),
    min_feedback: int = typer.Option(10, "--min-feedback", help="Refuse with fewer new "
                                     "feedback items than this."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="n_epochs (default auto)."),
    lr_multiplier: float = typer.Option(None, "--lr-multiplier", help="(default auto)."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="(default auto)."),
    seed: int = typer.Option(0, "--seed", help="The job's seed."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Feedback, method and export only: "
                                 "no job, nothing moved."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Export new feedback on ALIAS's answers, fine-tune, evaluate against the alias's model
    and promote the result only if it wins; each step's numbers are printed and saved as JSON."""
    from afinar.cli.eval_cmd import run_with_bars
    from afinar.cli.tune_cmd import _follow
    from afinar.evals.improve import improve as run_loop

    hp = {k: v for k, v in (("n_epochs", epochs), ("learning_rate_multiplier", lr_multiplier),
                            ("batch_size", batch_size)) if v is not None}
    if every is not None:
        _schedule(alias, eval_file, every, dry_run, as_json, [
            ("--method", method), ("--grader", grader and str(grader.resolve())),
            ("--gate-min", gate_min if grader else None), ("--min-feedback", min_feedback),
            ("--epochs", epochs), ("--lr-multiplier", lr_multiplier),
            ("--batch-size", batch_size), ("--seed", seed)])
        return

    def step(name: str, report) -> None:
        if name == "job":
            err_console.print(f"training {report.job['id']} on {report.job['base']}",
                              markup=False, soft_wrap=True)

    def wait(job_id: str) -> str:
        try:
            return _follow(job_id)
        except typer.Exit as e:  # a failed job: reported below, not an exit yet
            if e.exit_code == 1:
                return "failed"
            raise

    report = run_loop(alias, eval_file=eval_file, method=method,
                      grader=str(grader) if grader else None, gate_min=gate_min,
                      dry_run=dry_run,
                      min_feedback=min_feedback, hyperparameters=hp, seed=seed, wait=wait,
                      run_eval=run_with_bars, on_step=step).to_dict()
    if as_json:
        print_json(report)
    else:
        print_report(report)
    if report["job"] and report["job"]["status"] != "succeeded":
        raise typer.Exit(1)
