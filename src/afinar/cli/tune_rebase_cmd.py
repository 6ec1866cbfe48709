"""``afinar tune rebase``: a finished job's recipe on another base model (the service:
``afinar.tuning.rebase``; the comparison: ``afinar.evals.compare``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.table import Column, Table

from afinar.cli.common import console, err_console, existing_file, status

# ``tune_cmd._follow`` (the job's progress bar), handed over by ``register``: this module is
# registered from tune_cmd, so importing it back would be an import circle.
_follow = None


def rebase(
    ref: str = typer.Argument(..., metavar="JOB_OR_MODEL", help="A finished job's id, or its "
                              "fine-tuned model (or a checkpoint)."),
    model: str = typer.Option(..., "--model", "-m", help="The new base model."),
    eval_config: Path = typer.Option(None, "--eval", help="eval.yaml: once the new job is done, "
                                     "compare the old fine-tune and the new one with it (and "
                                     "the advisor's verdict); implies --wait.",
                                     callback=existing_file),
    wait: bool = typer.Option(False, "--wait", help="Follow the new job until it ends."),
) -> None:
    """Re-run a job's recipe (data by hash, method, hyperparameters as asked, seed, suffix) on
    another base: the data is validated and encoded with the new base's chat template first."""
    from afinar.tuning import spawn_worker
    from afinar.tuning.rebase import plan, start

    cfg = None
    if eval_config:
        from afinar.evals.config import load_config

        cfg = load_config(eval_config)  # a bad config fails before any job exists
    with status(f"checking the recipe's data for {model}"):
        p = plan(ref, model)
    print_plan(p)
    for key, r in p.reports.items():
        for line in r.warning_lines():
            err_console.print(f"  warning ({key}): {escape(line)}")
    job = start(p)
    console.print(f"created [bold]{job.id}[/] (rebased from {p.recipe.job_id})", soft_wrap=True)
    spawn_worker()
    if not (wait or cfg):
        console.print(f"follow it with: afinar tune wait {job.id}", markup=False,
                      soft_wrap=True)
        return
    _follow(job.id)  # a failed job exits 1 here
    if cfg is None:
        return
    from afinar.cli.eval_cmd import print_summary, run_with_bars
    from afinar.evals.compare import fine_tune_comparison
    from afinar.tuning import Jobs

    new_model = Jobs().get(job.id).fine_tuned_model
    ev = run_with_bars(fine_tune_comparison(cfg, p.recipe.fine_tuned_model, new_model))
    print_summary(ev.summary())
    console.print(f"\nrun {ev.id}: afinar eval report {ev.id} --html report.html",
                  markup=False, soft_wrap=True)


def print_plan(p) -> None:
    """The recipe as it will run again, within 80 columns."""
    r = p.recipe
    t = Table(Column("", no_wrap=True), Column("", overflow="fold", ratio=1),
              box=box.SIMPLE_HEAD, show_header=False, pad_edge=False,
              title=escape(f"rebase {r.job_id}: {r.base_model} -> {p.new_base}"))
    t.add_row("method", escape(r.method.get("type", "lora")))
    for key, digest in r.datasets.items():
        rep = p.reports.get(key)
        n = f", {rep.n_examples} examples" if rep else ""
        t.add_row(key.replace("_file", ""), escape(f"{r.filenames.get(key, '')} (sha256 "
                                                   f"{digest[:12]}{n})"))
    from afinar.tuning.hparams import Hyperparameters

    defaults = Hyperparameters().model_dump()
    asked = {k: v for k, v in r.hyperparameters.items()  # what differs from the defaults
             if v not in ("auto", None) and (k not in defaults or v != defaults[k])}
    autos = sorted(k for k, v in r.hyperparameters.items() if v == "auto")
    t.add_row("hyperparameters", escape(", ".join(f"{k}={v}" for k, v in asked.items())
                                        or "the defaults"))
    if autos:
        t.add_row("auto (again)", escape(", ".join(autos)))
    t.add_row("seed, suffix", escape(f"{r.seed}, {r.suffix or '-'}"))
    console.print(t)


def register(app: typer.Typer, follow) -> None:
    """Add ``rebase`` to the ``afinar tune`` group; ``follow(job_id)`` shows a job to its end."""
    global _follow
    _follow = follow
    app.command("rebase")(rebase)
