"""``afinar projects list|create`` and ``afinar audit``: the projects keys belong to, and the
server's audit log (who did what, newest first)."""

from __future__ import annotations

import datetime
import json

import typer
from rich import box
from rich.table import Table

from afinar.cli.common import console

projects_app = typer.Typer(help="Projects: keys and everything they make belong to one.",
                           no_args_is_help=True)


@projects_app.command("list")
def list_projects(as_json: bool = typer.Option(False, "--json")) -> None:
    """Projects with their number of keys."""
    from afinar.store.keys import Projects

    rows = Projects().list()
    if as_json:
        typer.echo(json.dumps([{"id": p.id, "created_at": p.created_at, "keys": n}
                               for p, n in rows], indent=2))
        return
    t = Table("project", "keys", "created", box=box.SIMPLE, pad_edge=False)
    for p, n in rows:
        t.add_row(p.id, str(n), _when(p.created_at))
    console.print(t)


@projects_app.command("create")
def create_project(name: str = typer.Argument(..., help="1-64 lowercase letters, digits, _ -")
                   ) -> None:
    """Create a project (``keys create --project NAME`` also makes one)."""
    from afinar.store.keys import Projects

    rec = Projects().create(name)
    typer.echo(f"created project {rec.id}: add keys with "
               f"`afinar keys create --name NAME --project {rec.id}`")


def audit(
    limit: int = typer.Option(50, "--limit", min=1, help="The newest N entries."),
    key: str = typer.Option(None, "--key", help="Only this key (id or name)."),
    project: str = typer.Option(None, "--project", help="Only this project."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The server's audit log, newest first: every write (POST, DELETE) and every admin read,
    with the key, its project, the action, the object and the HTTP status."""
    from afinar.store.audit import AuditLog

    entries = AuditLog().entries(limit, key, project)
    if as_json:
        typer.echo(json.dumps([{"time": e.created_at, "key_id": e.key_id,
                                "key_name": e.key_name, "project": e.project_id,
                                "action": e.action, "object": e.object_id,
                                "status": e.status} for e in entries], indent=2))
        return
    t = Table(box=box.SIMPLE, pad_edge=False)
    t.add_column("time", no_wrap=True)
    t.add_column("key", overflow="fold")
    t.add_column("project", overflow="fold")
    t.add_column("action / object", overflow="fold")
    t.add_column("status", no_wrap=True)
    for e in entries:
        t.add_row(_when(e.created_at, seconds=True), e.key_name, e.project_id,
                  e.action + (f"\n  {e.object_id}" if e.object_id else ""), str(e.status))
    console.print(t)


def _when(ts: float | None, seconds: bool = False) -> str:
    if not ts:
        return ""
    return datetime.datetime.fromtimestamp(ts).strftime(
        "%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
