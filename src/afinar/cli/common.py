"""Shared pieces of the CLI: consoles (stdout for results, stderr for progress) and formatting."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from rich.console import Console

console = Console(highlight=False)
if not console.is_terminal:  # piped output: do not squeeze tables into 80 columns
    console.width = 160
err_console = Console(stderr=True, highlight=False)


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


@contextlib.contextmanager
def status(message: str) -> Iterator[Any]:
    """A spinner on stderr while something slow runs; ``update(msg)`` changes its text."""
    with err_console.status(message) as st:
        yield st
