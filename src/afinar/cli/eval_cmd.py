"""``afinar eval``: run an evaluation (from eval.yaml or flags), show it, report it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.progress import Progress
from rich.table import Column, Table
from typer.core import TyperCommand

from afinar.cli.common import console, err_console, existing_file, print_json, progress_columns

app = typer.Typer(help="Evaluate strategies side by side (base, few-shot, RAG, fine-tuned, "
                       "both) on held-out data and get a recommendation.", no_args_is_help=True)

STRATEGIES_HELP = "Comma-separated strategy types:"
METRICS_HELP = "Comma-separated metric names (with options: in eval.yaml):"


class RegistryHelp(TyperCommand):
    """Help that lists the registered strategies and metrics (plugins included), read from the
    registries when help is shown: their modules load the evaluation code, which no other
    command needs to start."""

    def format_help(self, ctx, formatter) -> None:
        from afinar.evals.metrics import METRICS
        from afinar.evals.strategies import STRATEGIES

        for p in self.params:
            if p.name == "strategies":
                p.help = f"{STRATEGIES_HELP} {', '.join(STRATEGIES.names())}."
            elif p.name == "metrics":
                p.help = f"{METRICS_HELP} {', '.join(METRICS.names())}."
        super().format_help(ctx, formatter)


def run_with_bars(config, resume: str | None = None):
    """Run the evaluation under one progress line per strategy (then scoring), each within 80
    columns with its count and ETA; "loading model" until a strategy's first answer."""
    from afinar.evals.runner import run

    with Progress(*progress_columns("cases", 22), console=err_console) as bar:
        tasks: dict[tuple[str, str], int] = {}

        def progress(stage: str, name: str, done: int, total: int) -> None:
            key = (stage, name)
            label = {"answer": name, "score": "scoring",
                     "forgetting": f"forgetting: {name.split(':')[-1]}"}[stage]
            phase = "loading model" if stage == "answer" and done == 0 else None
            if key not in tasks:
                tasks[key] = bar.add_task(escape(label), total=total, phase=phase)
            bar.update(tasks[key], completed=done, total=total, phase=phase)

        return run(config, resume=resume, progress=progress)


def _interval(v: dict) -> str:
    return "n/a" if v["mean"] is None else f"{v['mean']:.2f} [{v['lo']:.2f},{v['hi']:.2f}]"


def _mean(v: dict) -> str:
    return "n/a" if v["mean"] is None else f"{v['mean']:.2f}"


def _cost_cells(c: dict) -> list[str]:
    train = f"{c['training_s']:.0f} s" if c.get("training_s") is not None else "-"
    return [f"{c['added_prompt_tokens'] or 0:.0f}", f"{c['latency_p50_s'] or 0:.2f}",
            f"{c['tokens_per_s'] or 0:.1f}", train]


def summary_tables(summary: dict, wide: bool = False) -> list[Table]:
    """The measured table. Compact (fits 80 columns): one row per strategy with the main
    metric's mean and 95% interval and the cost columns, then the other metrics' means, one
    row per metric. ``wide``: every metric with its interval, and prompt tokens, in one table."""
    main = summary["main_metric"]
    metrics = summary["run"]["metrics"]
    rows = summary["strategies"]
    num = {"justify": "right", "no_wrap": True}
    title = f"{summary['n_cases']} held-out cases, main metric {main} (mean, 95% interval)"
    if wide:
        t = Table(Column("strategy", no_wrap=True), *(Column(m, **num) for m in metrics),
                  *(Column(c, **num) for c in ("prompt tok", "+added", "p50 s", "tok/s",
                                               "training")), title=escape(title))
        for r in rows:
            t.add_row(escape(r["name"]), *(_interval(r["metrics"][m]) for m in metrics),
                      f"{r['cost']['prompt_tokens'] or 0:.0f}", *_cost_cells(r["cost"]))
        return [t]
    t = Table(Column("strategy", overflow="fold", ratio=1), Column(escape(main), **num),
              *(Column(c, **num) for c in ("+prompt", "p50 s", "tok/s", "training")),
              title=escape(title), box=box.SIMPLE_HEAD, pad_edge=False)
    for r in rows:
        t.add_row(escape(r["name"]), _interval(r["metrics"][main]), *_cost_cells(r["cost"]))
    out = [t]
    others = [m for m in metrics if m != main]
    if others:
        o = Table(Column("metric (mean)", overflow="fold"),
                  *(Column(escape(r["name"]), overflow="fold", justify="right") for r in rows),
                  box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="intervals and prompt tokens: --wide", caption_justify="left")
        for m in others:
            o.add_row(escape(m), *(_mean(r["metrics"][m]) for r in rows))
        out.append(o)
    return out


def print_summary(summary: dict, wide: bool = False) -> None:
    metrics = summary["run"]["metrics"]
    for t in summary_tables(summary, wide):
        if not wide:
            console.print(t)
            continue
        saved = console.width  # as wide as it needs, whatever the terminal
        need = console.measure(t, options=console.options.update_width(10_000)).maximum
        console.width = max(saved, need)
        try:
            console.print(t)
        finally:
            console.width = saved
    for m in metrics:
        noted = [f"{r['name']} {n}" for r in summary["strategies"]
                 if (n := r["metrics"][m]["notes"].get("unparsable"))]
        if noted:
            console.print(escape(f"{m}: unparsable answers (counted wrong): {', '.join(noted)}"))
    for f in summary.get("forgetting") or []:
        state = "[red]flagged[/]: " + "; ".join(f["reasons"]) if f["flagged"] else "ok"
        console.print(f"forgetting {escape(f['model'])}: perplexity {f['perplexity_base']:.1f} -> "
                      f"{f['perplexity_tuned']:.1f}, general accuracy {f['accuracy_base']:.0%}"
                      f" -> {f['accuracy_tuned']:.0%} ({state})")
    if summary.get("latency"):
        console.print(escape(summary["latency"]["note"]), soft_wrap=False)
    a = summary["advice"]
    console.print(f"\n[bold green]Recommendation: {escape(str(a['recommendation']))}[/]  "
                  f"{escape(a.get('verdict', ''))}")
    for r in a["reasons"]:
        console.print(escape(f"  - {r}"))


@app.command("run", cls=RegistryHelp)
def run_cmd(
    config: Path = typer.Argument(None, help="eval.yaml (flags below override it).",
                                  callback=existing_file),
    test_file: Path = typer.Option(None, "--test", help="Held-out chat JSONL.",
                                   callback=existing_file),
    train_file: Path = typer.Option(None, "--train", help="Few-shot pool.",
                                    callback=existing_file),
    strategies: str = typer.Option(None, "--strategies", "-s", help=STRATEGIES_HELP),
    model: str = typer.Option(None, "-m", "--model", help="Base model of every strategy."),
    fine_tuned: list[str] = typer.Option(None, "--fine-tuned",
                                         help="ft: model (or checkpoint) for the fine-tuned "
                                              "strategies that name none (repeatable)."),
    kb: str = typer.Option(None, "--kb", help="Knowledge base for rag strategies."),
    metrics: str = typer.Option(None, "--metrics", help=METRICS_HELP),
    main_metric: str = typer.Option(None, "--main-metric"),
    limit: int = typer.Option(None, "--limit", help="Only the first N cases."),
    html: Path = typer.Option(None, "--html", help="Also write the HTML report here."),
    resume: str = typer.Option(None, "--resume", help="Finish an interrupted run."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    wide: bool = typer.Option(False, "--wide", help="The full table: every metric with its "
                              "interval (wider than 80 columns)."),
) -> None:
    """Answer every held-out case with every strategy; print the table and a recommendation."""
    from afinar.evals.config import load_config, parse_config
    from afinar.evals.report import write_html

    cfg = None
    if not resume:
        over = {"test_file": str(test_file) if test_file else None,
                "train_file": str(train_file) if train_file else None, "model": model,
                "knowledge_base": kb, "main_metric": main_metric, "limit": limit}
        if metrics:
            over["metrics"] = [m.strip() for m in metrics.split(",") if m.strip()]
        if strategies:
            over["strategies"] = [s.strip() for s in strategies.split(",") if s.strip()]
        if config:
            cfg = load_config(config, **over)
        else:
            if not test_file:
                raise typer.BadParameter("give an eval.yaml or --test")
            cfg = parse_config({k: v for k, v in over.items() if v is not None}, Path.cwd())
        cfg = cfg.with_fine_tuned(list(fine_tuned or []))
    ev = run_with_bars(cfg, resume=resume)
    summary = ev.summary()
    if as_json:
        print_json(summary)
    else:
        print_summary(summary, wide)
        console.print(f"\nrun {ev.id}: afinar eval report {ev.id} --html report.html",
                      markup=False, soft_wrap=True)
    if html:
        write_html(summary, html)
        err_console.print(f"wrote {html}")


@app.command("report")
def report(run_id: str, html: Path = typer.Option(None, "--html", help="Self-contained HTML."),
           wide: bool = typer.Option(False, "--wide", help="The full table (every interval)."),
           jsonl: Path = typer.Option(None, "--jsonl", help="The per-example view as JSONL.")
           ) -> None:
    """Print a finished run's table and advice; write its HTML report or per-example JSONL."""
    from afinar.evals.report import write_html, write_jsonl
    from afinar.evals.runner import get_run

    summary = get_run(run_id).summary()
    print_summary(summary, wide)
    if html:
        write_html(summary, html)
        err_console.print(f"wrote {html}")
    if jsonl:
        write_jsonl(summary, jsonl)
        err_console.print(f"wrote {jsonl}")


@app.command("list")
def list_cmd(project: str = typer.Option(None, "--project",
                                         help="Only this project's runs (yaml `project:`).")
             ) -> None:
    """Evaluation runs, newest first."""
    from afinar.evals.runner import list_runs

    t = Table(Column("id", no_wrap=True), Column("name", overflow="fold"),
              Column("status", no_wrap=True), Column("recommendation", overflow="fold"),
              box=box.SIMPLE_HEAD, pad_edge=False)
    for r in list_runs(project=project):
        m = r.meta
        rec = ""
        if m["status"] == "succeeded":
            rec = r.summary()["advice"].get("recommendation") or ""
        t.add_row(r.id, escape(m.get("name") or ""), m["status"], escape(rec))
    console.print(t)
