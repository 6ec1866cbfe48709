"""``afinar feedback add|list|export``: feedback on answers the server logged
(``AFINAR_LOG_REQUESTS=on``), and datasets built from it (``afinar.data.feedback``).

The command line acts as the machine's owner: it sees every project's logged requests and
feedback (``--project`` narrows the list and the export)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import typer
from rich import box
from rich.table import Table

from afinar.cli.common import console
from afinar.errors import InvalidRequest
from afinar.store.access import Caller

app = typer.Typer(help="Feedback on served answers, and DPO/KTO/SFT datasets from it.",
                  no_args_is_help=True)
CLI = Caller(None, "command line", admin=True, owner=True)
RATINGS = {"+1": 1, "1": 1, "up": 1, "good": 1, "-1": -1, "down": -1, "bad": -1}


def _rating(value: str | None) -> int | None:
    if value is None:
        return None
    if value.strip().lower() not in RATINGS:
        raise InvalidRequest(f"--rating must be +1/up or -1/down, not {value!r}",
                             param="rating")
    return RATINGS[value.strip().lower()]


@app.command("add")
def add(
    request_id: str = typer.Argument(..., help="The id of a logged chat completion, completion "
                                     "or response (chatcmpl-..., cmpl-..., resp_...)."),
    rating: str = typer.Option(None, "--rating", help="+1 (up) or -1 (down)."),
    correction: str = typer.Option(None, "--correction", help="The answer it should have given."),
    correction_file: Path = typer.Option(None, "--correction-file",
                                         help="The corrected answer, read from a file."),
    prefer: int = typer.Option(None, "--prefer", min=0, help="The best of the request's n "
                               "choices (its index)."),
    choice: int = typer.Option(None, "--choice", min=0, help="The choice rated or corrected "
                               "(default 0)."),
    reason: str = typer.Option(None, "--reason", help="Why (free text, PII-redacted)."),
    as_json: bool = typer.Option(False, "--json", help="Print the feedback object as JSON."),
) -> None:
    """Rate, correct, or pick the preferred choice of one logged answer."""
    from afinar.data.feedback import add_feedback
    from afinar.store.feedback import Feedback, feedback_object

    if correction_file is not None:
        if correction is not None:
            raise InvalidRequest("give --correction or --correction-file, not both",
                                 param="correction")
        correction = correction_file.read_text(encoding="utf-8")
    given = [k for k, v in (("rating", rating), ("correction", correction),
                            ("preference", prefer)) if v is not None]
    if len(given) != 1:
        raise InvalidRequest("give exactly one of --rating, --correction (or "
                             "--correction-file) and --prefer", param="type")
    rec = add_feedback(Feedback(), CLI, request_id, given[0], rating=_rating(rating),
                       reason=reason, correction=correction, choice_index=choice,
                       preferred_index=prefer)
    if as_json:
        typer.echo(json.dumps(feedback_object(rec), indent=2, ensure_ascii=False))
    else:
        typer.echo(f"{rec.id}: {rec.type} on {rec.request_id}")


def _what(f) -> str:
    if f.type == "rating":
        return ("+1" if f.rating > 0 else "-1") + f" (choice {f.choice_index})"
    if f.type == "preference":
        return f"choice {f.preferred_index} preferred"
    text = " ".join((f.correction or "").split())
    return f"choice {f.choice_index}: " + (text if len(text) <= 60 else text[:59] + "…")


@app.command("list")
def list_feedback(
    request_id: str = typer.Option(None, "--request", help="Only feedback on this request."),
    type: str = typer.Option(None, "--type", help="rating, correction or preference."),
    project: str = typer.Option(None, "--project", help="Only this project."),
    limit: int = typer.Option(50, "--limit", min=1, help="The newest N."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Feedback, newest first."""
    from afinar.store.feedback import TYPES, Feedback, feedback_object

    if type is not None and type not in TYPES:
        raise InvalidRequest(f"--type must be one of {', '.join(TYPES)}, not {type!r}",
                             param="type")
    items = Feedback().items(CLI, request_id=request_id, project=project, type=type)[:limit]
    if as_json:
        typer.echo(json.dumps([{**feedback_object(f), "project": f.project_id,
                                "key_name": f.key_name} for f, _ in items], indent=2,
                              ensure_ascii=False))
        return
    t = Table(box=box.SIMPLE, pad_edge=False)
    t.add_column("when", no_wrap=True)
    t.add_column("request / feedback", overflow="fold")
    t.add_column("type", no_wrap=True)
    t.add_column("feedback", overflow="fold")
    for f, _ in items:
        when = datetime.datetime.fromtimestamp(f.created_at).strftime("%m-%d %H:%M")
        t.add_row(when, f"{f.request_id}\n  {f.id}", f.type,
                  _what(f) + (f"\n  reason: {f.reason}" if f.reason else ""))
    console.print(t)
    if not items:
        console.print("no feedback (the server logs requests with AFINAR_LOG_REQUESTS=on)")


@app.command("export")
def export(
    kind: str = typer.Option(..., "--as", help="dpo (preference pairs), kto (thumbs as labels) "
                             "or sft (corrected answers)."),
    out: Path = typer.Option(None, "--out", help="The JSONL file (default feedback-KIND.jsonl); "
                             "with --split: FILE.train.jsonl and FILE.val.jsonl.", dir_okay=False),
    split: float = typer.Option(0.0, "--split", help="Fraction held out for validation (0: one "
                                "file)."),
    seed: int = typer.Option(0, "--seed", help="Same feedback and seed, same split."),
    project: str = typer.Option(None, "--project", help="Only this project's feedback."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Build a validated DPO, KTO or SFT file from feedback.

    Deduplicated, split, with the counts of what was used and dropped (and why); nothing is
    written unless it passes validation."""
    from afinar.data.feedback import EXPORTS
    from afinar.data.feedback import export as build_export
    from afinar.store.feedback import Feedback

    if kind not in EXPORTS:
        raise InvalidRequest(f"--as must be one of {', '.join(EXPORTS)}, not {kind!r}",
                             param="as")
    s = build_export(kind, Feedback().items(CLI, project=project), out, split, seed)
    if as_json:
        typer.echo(json.dumps(s.to_dict(), indent=2, ensure_ascii=False))
        return
    t = Table(title=f"{kind} export", box=box.SIMPLE, pad_edge=False, title_justify="left")
    t.add_column("", overflow="fold")
    t.add_column("count", justify="right", no_wrap=True)
    t.add_row("feedback read", str(s.feedback))
    t.add_row("feedback used", str(s.used))
    for reason, n in s.dropped.items():
        t.add_row(f"dropped: {reason}", str(n))
    t.add_row("examples built", str(s.examples))
    if s.duplicates:
        t.add_row("duplicates removed", str(s.duplicates))
    for code, n in s.invalid.items():
        t.add_row(f"invalid examples ({code})", str(n))
    for name, n in s.written.items():
        t.add_row(f"written: {name}", str(n))
    console.print(t)
    for w in s.warnings:
        console.print(f"warning: {w}")
    for name, path in s.paths.items():  # whole, so a long path stays copyable
        typer.echo(f"{name}: {path}")
