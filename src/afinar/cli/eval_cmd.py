"""``afinar eval``: run an evaluation (from eval.yaml or flags), show it, report it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import Progress
from rich.markup import escape
from rich.table import Table

from afinar.cli.common import console, err_console, existing_file, print_json, progress_columns

app = typer.Typer(help="Evaluate strategies side by side (base, few-shot, RAG, fine-tuned, "
                       "both) on held-out data and get a recommendation.", no_args_is_help=True)


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


def print_summary(summary: dict) -> None:
    main = summary["main_metric"]
    metrics = summary["run"]["metrics"]
    t = Table(title=f"{summary['n_cases']} held-out cases, main metric {main} "
                    "(mean and 95% interval)")
    t.add_column("strategy", no_wrap=True)
    for m in metrics:
        t.add_column(m, justify="right")
    for c in ("prompt tok", "+added", "p50 s", "tok/s", "training"):
        t.add_column(c, justify="right")
    for r in summary["strategies"]:
        cells = []
        for m in metrics:
            v = r["metrics"][m]
            cells.append("n/a" if v["mean"] is None else
                         f"{v['mean']:.2f} [{v['lo']:.2f},{v['hi']:.2f}]")
        c = r["cost"]
        train = f"{c['training_s']:.0f} s" if c.get("training_s") is not None else "-"
        t.add_row(escape(r["name"]), *cells, f"{c['prompt_tokens'] or 0:.0f}",
                  f"{c['added_prompt_tokens'] or 0:.0f}", f"{c['latency_p50_s'] or 0:.2f}",
                  f"{c['tokens_per_s'] or 0:.1f}", train)
    console.print(t)
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


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(None, help="eval.yaml (flags below override it).",
                                  callback=existing_file),
    test_file: Path = typer.Option(None, "--test", help="Held-out chat JSONL.",
                                   callback=existing_file),
    train_file: Path = typer.Option(None, "--train", help="Few-shot pool.",
                                    callback=existing_file),
    strategies: str = typer.Option(None, "--strategies", "-s",
                                   help="Comma-separated: base,few_shot,rag,fine_tuned,"
                                        "fine_tuned_rag."),
    model: str = typer.Option(None, "-m", "--model", help="Base model of every strategy."),
    fine_tuned: list[str] = typer.Option(None, "--fine-tuned",
                                         help="ft: model (or checkpoint) for the fine-tuned "
                                              "strategies that name none (repeatable)."),
    kb: str = typer.Option(None, "--kb", help="Knowledge base for rag strategies."),
    metrics: str = typer.Option(None, "--metrics", help="Comma-separated metric names."),
    main_metric: str = typer.Option(None, "--main-metric"),
    limit: int = typer.Option(None, "--limit", help="Only the first N cases."),
    html: Path = typer.Option(None, "--html", help="Also write the HTML report here."),
    resume: str = typer.Option(None, "--resume", help="Finish an interrupted run."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
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
        print_summary(summary)
        console.print(f"\nrun {ev.id}: afinar eval report {ev.id} --html report.html")
    if html:
        write_html(summary, html)
        err_console.print(f"wrote {html}")


@app.command("report")
def report(run_id: str, html: Path = typer.Option(None, "--html", help="Self-contained HTML."),
           jsonl: Path = typer.Option(None, "--jsonl", help="The per-example view as JSONL.")
           ) -> None:
    """Print a finished run's table and advice; write its HTML report or per-example JSONL."""
    from afinar.evals.report import write_html, write_jsonl
    from afinar.evals.runner import get_run

    summary = get_run(run_id).summary()
    print_summary(summary)
    if html:
        write_html(summary, html)
        err_console.print(f"wrote {html}")
    if jsonl:
        write_jsonl(summary, jsonl)
        err_console.print(f"wrote {jsonl}")


@app.command("list")
def list_cmd() -> None:
    """Evaluation runs, newest first."""
    from afinar.evals.runner import list_runs

    t = Table()
    for c in ("id", "name", "status", "recommendation"):
        t.add_column(c)
    for r in list_runs():
        m = r.meta
        rec = ""
        if m["status"] == "succeeded":
            rec = r.summary()["advice"].get("recommendation") or ""
        t.add_row(r.id, escape(m.get("name") or ""), m["status"], escape(rec))
    console.print(t)
