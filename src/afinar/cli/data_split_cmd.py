"""``afinar data split`` and ``afinar data check-leak``: train/val/test splits and leak checks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Column, Table

from afinar.cli.common import console, err_console, print_json
from afinar.data.leak import check_leak
from afinar.data.split import SPLITS, split_file


def split(
    file: Path = typer.Argument(..., help="The dataset to split (.jsonl, .json, .csv)."),
    val: float = typer.Option(0.1, "--val", help="Fraction of examples for validation."),
    test: float = typer.Option(0.1, "--test", help="Fraction of examples for the test split."),
    seed: int = typer.Option(0, "--seed", help="Same file and seed, same split."),
    out: Path = typer.Option(None, "--out", help="Folder for train/val/test.jsonl "
                                                 "(default: FILE's folder)."),
    no_stratify: bool = typer.Option(False, "--no-stratify",
                                     help="Shuffle without keeping label proportions."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Write train/val/test.jsonl: seeded, duplicates kept together, stratified by short labels."""
    summary = split_file(file, out, val=val, test=test, seed=seed,
                         stratify="none" if no_stratify else "auto")
    if as_json:
        print_json(summary.to_dict())
        return
    total = sum(summary.counts.values())
    t = Table(Column("split", no_wrap=True), Column("examples", justify="right"),
              Column("share", justify="right"), Column("file", overflow="fold"))
    for s in SPLITS:
        share = f"{summary.counts[s] / total:.1%}" if total else "-"
        t.add_row(s, str(summary.counts[s]), share, summary.paths.get(s, "(not written)"))
    console.print(t)
    if summary.stratified:
        names = sorted({lb for per in summary.labels.values() for lb in per})
        lt = Table(Column("label", overflow="fold"),
                   *(Column(s, justify="right") for s in SPLITS))
        for lb in names:
            lt.add_row(lb, *(str(summary.labels[s].get(lb, 0)) for s in SPLITS))
        console.print(lt)
    else:
        console.print("not stratified (shuffled with the seed)")
    console.print(f"duplicate groups kept within one split: {summary.duplicate_groups} "
                  f"({summary.duplicate_rows} repeated examples); seed {summary.seed}")
    for w in summary.warnings:
        err_console.print(f"[yellow]warning[/]: {w}")


def check_leak_cmd(
    train: Path = typer.Argument(..., help="The training file."),
    other: Path = typer.Argument(..., help="The file that must not overlap it (val, test, eval)."),
    threshold: float = typer.Option(0.8, "--threshold", help="Jaccard similarity (0.5 to 1) from "
                                                             "which a pair is a near duplicate."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (every pair)."),
    max_show: int = typer.Option(20, "--max-show", help="Pairs to list in the table."),
) -> None:
    """Find examples of OTHER duplicated in TRAIN (exact, normalized, near); exit 1 if any."""
    report = check_leak(train, other, threshold=threshold)
    if as_json:
        print_json(report.to_dict())
    else:
        c = report.counts
        console.print(f"{report.train_examples} training examples, {report.other_examples} in "
                      f"{other.name}: {c['exact']} exact, {c['normalized']} normalized and "
                      f"{c['near']} near duplicates (Jaccard >= {threshold:g}); "
                      f"{len(report.pairs)} leaked ({report.leaked_fraction:.1%})")
        if report.pairs:
            t = Table("kind", Column("train line", justify="right"),
                      Column("other line", justify="right"), Column("similarity", justify="right"),
                      Column("example (other)", overflow="fold"))
            for p in report.pairs[:max(max_show, 0)]:
                t.add_row(p.kind, str(p.train_line), str(p.other_line), f"{p.similarity:.2f}",
                          p.preview)
            console.print(t)
            if len(report.pairs) > max_show:
                console.print(f"... and {len(report.pairs) - max(max_show, 0)} more (--max-show, "
                              "--json)")
    if report.pairs:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``split`` and ``check-leak`` to the ``afinar data`` group."""
    app.command("split")(split)
    app.command("check-leak")(check_leak_cmd)
