"""``afinar monitor MODEL_OR_ALIAS``: how far current questions are from the model's training
data and evaluation set, retrieval and feedback signals, and what to do (``afinar.evals.drift``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.progress import Progress
from rich.table import Column, Table

from afinar.cli.common import (
    add_schedule,
    console,
    err_console,
    existing_file,
    print_json,
    progress_columns,
)

WIDTH = 80


def print_report(r: dict) -> None:
    """The signals as a table that folds within 80 columns, then the recommendations."""
    from afinar.evals.drift_report import signals

    q = r["queries"]
    t = Table(Column("signal", overflow="fold", max_width=17), Column("value", overflow="fold",
                                                                   ratio=3),
              Column("compared with", overflow="fold", ratio=2),
              Column("test", overflow="fold", ratio=2), Column("flag", no_wrap=True),
              box=box.SIMPLE_HEAD, pad_edge=False, width=min(console.width, WIDTH),
              title=escape(f"drift of {r['model']}: {q['n']} questions from {q['source']}"),
              title_justify="left")
    for s in signals(r):
        flag = "-" if s["flag"] is None else ("[bold red]yes[/]" if s["flag"] else "no")
        t.add_row(escape(s["name"]), escape(s["value"]), escape(s["ref"]), escape(s["test"]),
                  flag)
    console.print(t)
    if not r["recommendations"]:
        console.print("no recommendation: no signal crossed its threshold", markup=False)
    for a in r["recommendations"]:
        console.print(f"[bold yellow]{escape(a['action'])}[/]: " + escape("; ".join(
            a["because"])), soft_wrap=False, width=min(console.width, WIDTH))
        if a["queued"]:
            line = f"  queued: {a['queued']} (afinar {' '.join(a['command'])})"
        elif a["command"]:
            line = f"  command: afinar {' '.join(a['command'])} (--queue queues it)"
        else:
            line = f"  {a['why_not']}"
        console.print(line, markup=False, soft_wrap=True)


def _schedule(model: str, every: str, as_json: bool, flags: list[tuple[str, object]],
              queue_it: bool) -> None:
    """``--every``: the same command (paths made absolute) as a schedule the workers run
    (``afinar.store.schedules``); an unknown model or a bad interval is refused now."""
    from afinar.models import Catalog
    from afinar.store.schedules import parse_duration

    seconds = parse_duration(every, "--every")
    Catalog().get(model)  # an unknown model or alias: its error now, not at every run
    argv = ["monitor", model]
    for k, v in flags:
        if v is not None:
            argv += [k, str(v.resolve()) if isinstance(v, Path) else str(v)]
    argv += ["--queue"] if queue_it else []
    add_schedule(argv, every, seconds, as_json)


def monitor(
    model: str = typer.Argument(..., help="The model or alias whose traffic to check."),
    queries: Path = typer.Option(None, "--queries", help="Recent questions (JSONL rows with "
                                 "messages/question/query, or text: one a line) instead of "
                                 "the request log.", dir_okay=False, callback=existing_file),
    since: str = typer.Option(None, "--since", help="The log's window: 7d (default), 12h, or "
                              "a date (2026-11-01); earlier requests are the baseline."),
    train: Path = typer.Option(None, "--train", help="The training data (default: the "
                               "fine-tune's manifest's training file).", dir_okay=False,
                               callback=existing_file),
    eval_file: Path = typer.Option(None, "--eval", help="The evaluation set: eval.yaml (its "
                                   "test file and knowledge base) or a test JSONL.",
                                   dir_okay=False, callback=existing_file),
    kb: str = typer.Option(None, "--kb", help="The knowledge base answers are grounded on."),
    config: Path = typer.Option(None, "--config", help="Thresholds (YAML; see afinar.evals."
                                "drift_inputs.DriftConfig for the keys and defaults).",
                                dir_okay=False, callback=existing_file),
    html_out: Path = typer.Option(None, "--html", help="Write the report as HTML here.",
                                  dir_okay=False),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    queue_it: bool = typer.Option(False, "--queue", help="Queue each recommended action that "
                                  "can run unattended (a worker runs it)."),
    every: str = typer.Option(None, "--every", help="Register this command to run on a "
                              "schedule (1h, 1d, ...) by the worker, instead of now."),
) -> None:
    """Report how far MODEL's current questions are from its training data and evaluation set
    (a permutation test on nearest-neighbour embedding distances), the share of 'not in the
    sources' answers, falling retrieval scores and negative feedback; recommend (and with
    --queue, queue) re-syncing the knowledge base, extending the evaluation set or re-training."""
    from afinar.evals.drift import monitor as run_monitor
    from afinar.evals.drift import queue
    from afinar.evals.drift_report import write_html

    if every is not None:
        _schedule(model, every, as_json, [
            ("--queries", queries), ("--since", since), ("--train", train),
            ("--eval", eval_file), ("--kb", kb), ("--config", config), ("--html", html_out)],
            queue_it)
        return
    bars: list[Progress] = []  # started at the first progress: bad input prints only its line
    tasks: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if as_json:
            return
        if not bars:
            bars.append(Progress(*progress_columns("texts"), console=err_console,
                                 transient=True))
            bars[0].start()
        if stage not in tasks:
            tasks[stage] = bars[0].add_task(stage, total=total)
        bars[0].update(tasks[stage], completed=done)

    try:
        report = run_monitor(model, queries=queries, since=since, train=train,
                             eval_file=eval_file, kb=kb, config=config, progress=progress)
    finally:
        for b in bars:
            b.stop()
    if queue_it:
        queue(report)
    r = report.to_dict()
    if html_out is not None:
        write_html(r, html_out)
    if as_json:
        print_json(r)
        return
    print_report(r)
    if html_out is not None:
        console.print(f"report: {html_out}", markup=False, soft_wrap=True)
