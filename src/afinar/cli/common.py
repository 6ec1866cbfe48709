"""Shared pieces of the CLI: consoles (stdout for results, stderr for progress) and formatting."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Column
from rich.text import Text

console = Console(highlight=False)
if not console.is_terminal:  # piped output: do not squeeze tables into 80 columns
    console.width = 160
err_console = Console(stderr=True, highlight=False)


def existing_file(path: Path | None) -> Path | None:
    """A typer ``callback`` for input files: a missing file, or a folder, is refused while the
    arguments are parsed, before anything loads (the message comes from ``cli.errors``)."""
    if path is None or path.is_file():
        return path
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))


SCORE_LEGEND = {
    "rrf": "rrf, reciprocal rank fusion (1 = first in both rankings)",
    "weighted": "weighted sum of cosine and scaled BM25",
    "cosine": "cosine similarity (dense)",
    "bm25": "BM25 / the best result's (lexical)",
    "rerank": "the reranker's",
}


def score_legend(hits) -> str:
    """One line (under 80 columns) saying which score results show, for ``kb search`` and
    ``ask``; ``--explain`` adds each retriever's score and rank."""
    kinds = sorted({h.score_kind for h in hits})
    return "score: " + "; ".join(SCORE_LEGEND.get(k, k) for k in kinds) + ", best first"


def explain_hit(h) -> str:
    """``dense 0.612 (#1)  lexical 7.31 (#3)``: what each retriever said about a hit."""
    parts = []
    for name, score, rank, fmt in (("dense", h.dense_score, h.dense_rank, ".3f"),
                                   ("lexical", h.lexical_score, h.lexical_rank, ".2f")):
        parts.append(f"{name} -" if score is None else
                     f"{name} {score:{fmt}}" + (f" (#{rank})" if rank else ""))
    return "  ".join(parts)


def human_count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def add_schedule(argv: list[str], every: str, seconds: float, as_json: bool) -> None:
    """A command's ``--every``: ``argv`` stored as a schedule the workers run
    (``afinar.store.schedules``), and the line (or JSON) that says so."""
    from afinar.store.db import get_database
    from afinar.store.schedules import Schedules

    rec = Schedules(get_database()).add(argv, seconds)
    if as_json:
        print_json({"schedule": rec.id, "argv": rec.argv, "every_s": rec.every_s})
        return
    console.print(f"{rec.id}: afinar {' '.join(rec.argv)} every {every} (a worker runs it: "
                  "afinar worker)", markup=False, soft_wrap=True)


class StepsColumn(ProgressColumn):
    """``12/200 steps``; the task's ``phase`` field instead while there is one ("loading
    model"), and nothing while the total is unknown (never ``0/None``)."""

    def __init__(self, unit: str):
        self.unit = unit
        super().__init__(table_column=Column(no_wrap=True))

    def render(self, task) -> Text:
        if task.fields.get("phase"):
            return Text(str(task.fields["phase"]), style="yellow")
        if task.total is None:
            return Text("")
        return Text(f"{int(task.completed)}/{int(task.total)} {self.unit}")


def progress_columns(unit: str, label_width: int = 14, *extra: ProgressColumn
                     ) -> list[ProgressColumn]:
    """A progress line that fits 80 columns: a label cut to ``label_width``, a 20-cell bar, the
    count, ``extra`` columns, elapsed time and ETA."""
    return [TextColumn("[bold]{task.description}", table_column=Column(
                width=label_width, no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=20), StepsColumn(unit), *extra, TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn()]


class StatsProgress(Progress):
    """A progress bar with one more line under it, ``stats`` (the latest metrics), so that the
    bar line itself keeps its count and ETA at 80 columns."""

    stats: str = ""

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        if self.stats:
            yield Text("  " + self.stats, no_wrap=True, overflow="ellipsis")


@contextlib.contextmanager
def status(message: str) -> Iterator[Any]:
    """A spinner on stderr while something slow runs; ``update(msg)`` changes its text."""
    with err_console.status(message) as st:
        yield st


@contextlib.contextmanager
def quiet_libraries(*loggers: str) -> Iterator[None]:
    """Keep libraries' own warnings (``pypdf``'s "EOF marker not found"...) off the terminal:
    the command reports each failure itself, in one line."""
    saved = []
    for name in loggers:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level, lg.propagate, lg.handlers[:]))
        lg.handlers[:] = [logging.NullHandler()]
        lg.propagate = False
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level, propagate, handlers in saved:
            lg.handlers[:] = handlers
            lg.propagate = propagate
            lg.setLevel(level)
