"""``afinar schedule add|list|remove``: afinar commands a worker runs every N seconds
(``afinar.store.schedules``; workers run them between jobs, ``afinar.tuning.scheduled``)."""

from __future__ import annotations

import datetime
import json

import typer
from rich import box
from rich.table import Table

from afinar.cli.common import console
from afinar.errors import InvalidRequest

app = typer.Typer(help="Run afinar commands on a schedule (kb sync, kb watch --once, "
                  "improve): workers run them between jobs.", no_args_is_help=True)


def _schedules():
    from afinar.store.db import get_database
    from afinar.store.schedules import Schedules

    return Schedules(get_database())


def check_parses(root, argv: list[str]) -> None:
    """The command's own parser (under ``root``, the ``afinar`` click group) reads ``argv``: a
    missing argument or an unknown option is refused now, not at its first run."""
    from typer._click import Context
    from typer._click import exceptions as click_errors

    cmd, args = root, list(argv)
    ctx = Context(cmd, info_name="afinar")
    while hasattr(cmd, "list_commands"):  # a group: the next word names its command
        sub = cmd.get_command(ctx, args[0]) if args else None
        if sub is None:
            raise InvalidRequest(f"afinar {' '.join(argv)}: no such command", param="argv")
        ctx, cmd, args = Context(sub, info_name=args[0], parent=ctx), sub, args[1:]
    try:
        cmd.make_context(ctx.info_name, args, parent=ctx.parent)
    except click_errors.UsageError as e:
        raise InvalidRequest(f"afinar {' '.join(argv)}: {e.format_message()}",
                             param="argv") from None


def _every(seconds: float | None) -> str:
    if seconds is None:
        return "once"
    for unit, div in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= div and seconds % div == 0:
            return f"{int(seconds // div)}{unit}"
    return f"{seconds:g}s"


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.datetime.fromtimestamp(t).strftime("%m-%d %H:%M")


@app.command("add")
def add(
    ctx: typer.Context,
    argv: list[str] = typer.Argument(..., help="The afinar command after --, e.g. "
                                     "-- kb sync NAME DIR."),
    every: str = typer.Option(None, "--every", help="Period: 30s, 5m, 1h, 1d (default: once)."),
    as_json: bool = typer.Option(False, "--json", help="Print the schedule as JSON."),
) -> None:
    """Schedule an afinar command: `afinar schedule add --every 1d -- kb sync NAME DIR`."""
    from afinar.store.schedules import check_argv, parse_duration

    seconds = parse_duration(every, "--every") if every is not None else None
    argv = check_argv(list(argv))
    check_parses(ctx.find_root().command, argv)
    rec = _schedules().add(argv, seconds)
    if as_json:
        typer.echo(json.dumps(_object(rec), indent=2))
    else:
        typer.echo(f"{rec.id}: afinar {' '.join(rec.argv)} ({_every(rec.every_s)}; "
                   "a worker runs it: afinar worker)")


def _object(r) -> dict:
    return {"id": r.id, "argv": r.argv, "every_s": r.every_s, "next_run_at": r.next_run_at,
            "runs": r.runs, "last_run_at": r.last_run_at, "last_status": r.last_status,
            "running": r.lease_owner}


@app.command("list")
def list_schedules(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Schedules: period, next run, runs so far and the last exit status."""
    recs = _schedules().list()
    if as_json:
        typer.echo(json.dumps([_object(r) for r in recs], indent=2))
        return
    t = Table(box=box.SIMPLE, pad_edge=False)
    t.add_column("id", no_wrap=True)
    t.add_column("every", no_wrap=True)
    t.add_column("next", no_wrap=True)
    t.add_column("runs", justify="right")
    t.add_column("last", no_wrap=True)
    t.add_column("command", overflow="fold")
    for r in recs:
        last = "-" if r.last_status is None else f"exit {r.last_status}"
        t.add_row(r.id, _every(r.every_s), "running" if r.lease_owner else _when(r.next_run_at),
                  str(r.runs), last, " ".join(r.argv))
    console.print(t)
    if not recs:
        console.print("no schedules (afinar schedule add --every 1d -- kb sync NAME DIR)")


@app.command("remove")
def remove(schedule_id: str = typer.Argument(..., help="The schedule's id (sched-...).")) -> None:
    """Remove a schedule (a run in progress finishes)."""
    _schedules().remove(schedule_id)
    typer.echo(f"removed {schedule_id}")
