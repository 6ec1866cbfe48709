"""``afinar promote``: evaluate a candidate against an alias's model and move the alias only when
the candidate wins (``afinar.evals.promotion``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from afinar.cli.common import console, existing_file, print_json


def print_decision(d, summary: dict | None) -> None:
    """The evaluation's table (80 columns), then the decision and its reasons."""
    from afinar.cli.eval_cmd import summary_tables

    if summary is not None:
        for t in summary_tables(summary):
            console.print(t)
    if d.promote:
        verb = "would move" if d.dry_run else "moved"
        head = f"[bold green]promote[/]: {verb} {escape(d.alias)} to {escape(d.candidate)}"
    else:
        head = (f"[bold yellow]refused[/]: {escape(d.alias)} stays on {escape(d.current)} "
                f"(candidate {escape(d.candidate)})")
    console.print(head + (" [dim](dry run: nothing moved)[/]" if d.dry_run else ""),
                  soft_wrap=True)
    for r in d.reasons:
        console.print(escape(f"  - {r}"))
    if d.run_id:
        console.print(f"evaluation: afinar eval report {d.run_id}", markup=False,
                      soft_wrap=True)


def promote(
    alias: str = typer.Option(..., "--alias", help="The alias to move (afinar models alias)."),
    candidate: str = typer.Option(..., "--candidate", help="The model to promote (ft:...)."),
    eval_file: Path = typer.Option(..., "--eval", help="eval.yaml with one strategy: its test "
                                   "file, metrics and main metric decide.",
                                   callback=existing_file),
    gate: Path = typer.Option(None, "--gate", help="A grader (YAML/JSON, OpenAI's shape) the "
                              "candidate's answers must pass too.", callback=existing_file),
    gate_min: float = typer.Option(0.5, "--gate-min", help="The gate's minimum mean score."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the decision; move nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the decision as JSON."),
) -> None:
    """Move ALIAS to CANDIDATE only if it beats the current model on the main metric outside
    the 95% interval of their paired difference (or ties and is cheaper); the decision and its
    reasons are kept in the alias's history."""
    from afinar.cli.eval_cmd import run_with_bars
    from afinar.evals.promotion import promote as run_promotion

    d, summary = run_promotion(alias, candidate, eval_file, dry_run=dry_run,
                               run_eval=run_with_bars, gate=gate, gate_min=gate_min)
    if as_json:
        print_json({**d.to_dict(), "summary": summary})
        return
    print_decision(d, summary)
