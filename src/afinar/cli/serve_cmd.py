"""``afinar serve`` (the OpenAI-compatible server) and ``afinar keys`` (its API keys)."""

from __future__ import annotations

import ipaddress
import json
import signal

import typer
from rich.table import Table

from afinar.cli.common import console, err_console
from afinar.errors import InvalidRequest
from afinar.models.engines import ENGINES, get_engine

keys_app = typer.Typer(help="API keys for the server (stored hashed; shown once).",
                       no_args_is_help=True)

DEV_MODE = ("local development mode: no API keys exist, so requests need no key; serving on "
            "{host} (loopback) only. Create a key with `afinar keys create --name NAME` to "
            "require keys.")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``; anything else (0.0.0.0, a LAN address, a name) is
    reachable from other machines."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_mode(host: str, has_keys: bool) -> bool:
    """True: keys required. False: local development mode (no keys, loopback host). Refuses a
    non-loopback host without keys."""
    if has_keys:
        return True
    if not is_loopback(host):
        raise InvalidRequest(
            f"no API key exists, and serving on {host} without keys would let anyone on the "
            "network in: create a key first (`afinar keys create --name NAME [--admin]`), or "
            "serve on 127.0.0.1 for local development without keys", param="host")
    return False


def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    no_worker: bool = typer.Option(False, "--no-worker", help="Do not start a job worker, "
                                   "now or when a job is created (workers run elsewhere)."),
    max_models: int = typer.Option(2, "--max-models", help="Models kept in memory."),
    max_adapters: int | None = typer.Option(
        None, "--max-adapters", min=1,
        help="LoRA/DoRA adapters kept loaded per base model (default: AFINAR_MAX_ADAPTERS, 8)."),
    engine: str | None = typer.Option(
        None, "--engine", help=f"{', '.join(ENGINES.names())} (default: AFINAR_ENGINE, "
                               "transformers, the reference)."),
    max_batch: int | None = typer.Option(
        None, "--max-batch", min=1, max=64,
        help="Concurrent requests on one model decoded together (default: AFINAR_MAX_BATCH, 8; "
             "1: one at a time)."),
) -> None:
    """Serve OpenAI's API (files, fine_tuning.jobs, models, chat, embeddings, vector stores).

    Every request except /health needs `Authorization: Bearer KEY`. With no key created yet the
    server runs in local development mode (no keys needed), allowed on a loopback host only."""
    import subprocess
    import sys

    import uvicorn

    from afinar.server import create_app
    from afinar.settings import get_settings
    from afinar.store.keys import ApiKeys

    settings = get_settings()
    if max_adapters is not None:
        settings = settings.model_copy(update={"max_adapters": max_adapters})
    if max_batch is not None:
        settings = settings.model_copy(update={"max_batch": max_batch})
    if engine is not None:
        # fails now (an unknown name: one error naming the registered engines; a missing
        # dependency: what to install) rather than on the first request
        get_engine(engine)
        settings = settings.model_copy(update={"engine": engine})
    auth = auth_mode(host, ApiKeys(settings).any())
    if not auth:
        err_console.print("[yellow]" + DEV_MODE.format(host=host) + "[/]", highlight=False)
    app = create_app(settings, auth=auth, max_models=max_models)
    app.state.spawn_workers = not no_worker  # --no-worker: jobs wait for `afinar worker`s
    worker = None
    if not no_worker:
        worker = subprocess.Popen([sys.executable, "-m", "afinar", "worker"],
                                  preexec_fn=_die_with_parent)
    # uvicorn stops on SIGINT and SIGTERM, then re-raises the signal it caught: SIGINT's
    # default raises KeyboardInterrupt, SIGTERM's would end the process at once, skipping the
    # ``finally`` that stops the worker. This handler makes SIGTERM an exit that runs it.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(app, host=host, port=port)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if worker is not None:
            stop_worker(worker)


def _exit_on_sigterm(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def _die_with_parent() -> None:
    """In the worker, before exec: Linux sends it SIGTERM when ``afinar serve`` dies, even by
    SIGKILL (prctl PR_SET_PDEATHSIG); elsewhere nothing."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_worker(worker, timeout_s: float = 30.0) -> None:
    """SIGTERM (the worker leaves its job to be resumed from the last checkpoint), then SIGKILL
    after ``timeout_s``."""
    import subprocess

    if worker.poll() is not None:
        return
    worker.terminate()
    try:
        worker.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


@keys_app.command("create")
def create(
    name_arg: str = typer.Argument(None, metavar="[NAME]", help="The key's name (or --name)."),
    name: str = typer.Option(None, "--name", help="A name to recognise the key by."),
    groups: str = typer.Option("", "--groups",
                               help="Comma-separated access groups (retrieval ACL)."),
    admin: bool = typer.Option(False, "--admin",
                               help="Reads everything in its project, manages its keys, "
                                    "deletes its models."),
    project: str = typer.Option("default", "--project",
                                help="The project the key belongs to (made if new)."),
    owner: bool = typer.Option(False, "--owner", help="An admin of every project."),
) -> None:
    """Create a key. Its secret is printed once, alone on the last line of stdout."""
    from afinar.store.keys import ApiKeys

    if name and name_arg and name != name_arg:
        raise InvalidRequest("give the name once (NAME or --name)", param="name")
    if not (name or name_arg):
        raise InvalidRequest("a key needs a name: afinar keys create --name NAME", param="name")
    rec, secret = ApiKeys().create(name or name_arg, groups, admin, project, owner)
    typer.echo(f"created {rec.id} ({rec.name}) project: {rec.project_id} groups: "
               f"{','.join(rec.groups) or '-'}{' owner' if rec.owner else ''}"
               f"{' admin' if rec.admin and not rec.owner else ''}")
    err_console.print("[dim]shown once: store it now; only its hash is kept[/]")
    typer.echo(secret)


@keys_app.command("list")
def list_keys(as_json: bool = typer.Option(False, "--json")) -> None:
    """Keys (never their secrets): id, name, project, groups, role, created (last use and the
    prefix with --json)."""
    from afinar.store.keys import ApiKeys

    keys = ApiKeys().list()
    if as_json:
        typer.echo(json.dumps([{"id": k.id, "name": k.name, "project": k.project_id,
                                "groups": k.groups or [], "admin": bool(k.admin),
                                "owner": bool(k.owner), "prefix": k.prefix,
                                "created_at": k.created_at, "last_used_at": k.last_used_at}
                               for k in keys], indent=2))
        return
    from rich import box

    # 80 columns: the id and project whole (`keys revoke` takes the id), the creation day;
    # names and groups wrap (times, last use and the prefix: --json)
    t = Table(box=box.SIMPLE, pad_edge=False)
    t.add_column("id", no_wrap=True)
    t.add_column("name", overflow="fold", ratio=1)
    t.add_column("project", no_wrap=True)
    t.add_column("groups", overflow="fold", ratio=1)
    t.add_column("role", no_wrap=True)
    t.add_column("created", no_wrap=True)
    for k in keys:
        role = "owner" if k.owner else "admin" if k.admin else ""
        t.add_row(k.id, k.name, k.project_id, ",".join(k.groups or []), role,
                  _day(k.created_at))
    console.print(t)


@keys_app.command("update")
def update(
    key_id: str,
    groups: str = typer.Option(None, "--groups", help="The key's groups, all of them "
                               "(comma-separated; '' for none)."),
    admin: bool = typer.Option(None, "--admin/--no-admin", help="Make it an admin or not."),
) -> None:
    """Change a key's groups or admin flag; requests with it follow at once."""
    from afinar.store.keys import ApiKeys

    if groups is None and admin is None:
        raise InvalidRequest("nothing to change: give --groups and/or --admin/--no-admin",
                             param="groups")
    rec = ApiKeys().update(key_id, groups, admin)
    typer.echo(f"updated {rec.id} ({rec.name}) groups: {','.join(rec.groups or []) or '-'}"
               f"{' admin' if rec.admin else ''}")


@keys_app.command("revoke")
def revoke(key_id: str) -> None:
    """Delete a key: requests with it get 401 from then on."""
    from afinar.store.keys import ApiKeys

    ApiKeys().revoke(key_id)
    console.print(f"revoked {key_id}")


def _day(ts: int | None) -> str:
    import datetime

    return "" if not ts else datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d")


def _when(ts: int | None) -> str:
    import datetime

    return "" if not ts else datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")
