"""``afinar data pii``: find personal data and secrets in a dataset file, or write a redacted copy.

Values are never printed in full: the table and the JSON show masked previews (``j***@x.com``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich import box
from rich.table import Column, Table
from rich.text import Text

from afinar.cli.common import console, err_console, existing_file, print_json
from afinar.data.issues import Issue
from afinar.data.pii import Finding, mask, redact_file, scan_file
from afinar.errors import InvalidRequest


def _by_kind(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in Counter(counts).most_common())


def _report_skipped(issues: list[Issue]) -> None:
    for issue in issues:
        err_console.print(f"skipped {issue}", markup=False, soft_wrap=True)


def pii(
    file: Path = typer.Argument(..., help="A dataset file: .jsonl, .json, .csv, .txt or .md.",
                                callback=existing_file),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (values masked)."),
    redact: Path = typer.Option(None, "--redact", metavar="OUT",
                                help="Write a JSONL copy to OUT with each value replaced by a "
                                     "typed placeholder (<EMAIL_1>), the same one per value."),
    max_show: int = typer.Option(50, "--max-show", metavar="N",
                                 help="List at most N findings (0: all); counts cover all."),
) -> None:
    """Find PII in a dataset file, or write a redacted copy (see ``_HELP``)."""
    if redact is not None:
        summary = redact_file(file, redact)
        _report_skipped(summary.issues)
        if as_json:
            print_json({"output": str(summary.dst), "examples": summary.examples,
                        "counts": summary.counts, "distinct": summary.distinct,
                        "skipped_lines": summary.skipped_lines})
        else:
            replaced = _by_kind(summary.counts) or "nothing"
            console.print(f"wrote {summary.examples} examples to {summary.dst}; replaced: "
                          f"{replaced}", markup=False, soft_wrap=True)
        return

    counts: Counter[str] = Counter()
    shown: list[Finding] = []
    skipped: list[Issue] = []
    for item in scan_file(file):
        if isinstance(item, Issue):
            skipped.append(item)
            continue
        counts[item.kind] += 1
        if max_show <= 0 or len(shown) < max_show:
            shown.append(item)
    _report_skipped(skipped)
    total = sum(counts.values())
    if as_json:
        print_json({"file": str(file), "counts": dict(counts), "total": total,
                    "findings": [f.to_dict() for f in shown],
                    "skipped_lines": [i.line for i in skipped if i.line is not None]})
    elif total:
        t = Table(Column("line", justify="right", no_wrap=True), Column("field", overflow="fold"),
                  Column("kind", no_wrap=True), Column("value", overflow="fold"),
                  box=box.SIMPLE_HEAD, pad_edge=False)
        for f in shown:
            t.add_row(str(f.line or "-"), Text(f.field or "-"), f.kind, Text(mask(f.kind, f.value)))
        console.print(t)
        if total > len(shown):
            console.print(f"{total - len(shown)} more not listed (--max-show 0 lists all)")
        console.print(f"{total} findings in {file}: {_by_kind(counts)}", markup=False,
                      soft_wrap=True)
    else:
        console.print(f"no PII found in {file}", markup=False, soft_wrap=True)
    if total:
        raise typer.Exit(1)
    if skipped:
        raise InvalidRequest(f"{len(skipped)} line(s) of {file} could not be read, so it is not "
                             "known to be free of PII", param="file")


_HELP = (
    "Find emails, phone numbers, card numbers, IBANs, IP addresses, API keys and passwords.\n\n"
    "Exit status: 0 when nothing is found, 1 when something is (to gate CI), 2 when the file "
    "cannot be read, or some lines could not be and nothing was found in the rest. "
    "With --redact: 0 once the copy is written."
)


def register(app: typer.Typer) -> None:
    """Add ``pii`` to the ``afinar data`` group."""
    app.command("pii", help=_HELP)(pii)
