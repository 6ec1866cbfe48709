"""``afinar serve`` (the OpenAI-compatible server) and ``afinar keys`` (its API keys)."""

from __future__ import annotations

import typer
from rich.table import Table

from afinar.cli.common import console, err_console

keys_app = typer.Typer(help="API keys for the server (stored hashed; shown once).",
                       no_args_is_help=True)


def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    no_worker: bool = typer.Option(False, "--no-worker", help="Do not start a job worker."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Accept requests without a key."),
    max_models: int = typer.Option(2, "--max-models", help="Models kept in memory."),
) -> None:
    """Serve OpenAI's API (files, fine_tuning.jobs, models, chat, embeddings, vector stores)."""
    import subprocess
    import sys

    import uvicorn

    from afinar.server import create_app
    from afinar.settings import get_settings
    from afinar.store.keys import ApiKeys

    settings = get_settings()
    has_keys = ApiKeys(settings).any()
    auth = not no_auth
    if auth and not has_keys:
        raise typer.BadParameter("no API key exists: create one with `afinar keys create NAME` "
                                 "or start with --no-auth (local use only)")
    if not auth and host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print("[yellow]warning[/]: serving without authentication on " + host)
    worker = None
    if not no_worker:
        worker = subprocess.Popen([sys.executable, "-m", "afinar", "worker"])
    try:
        uvicorn.run(create_app(settings, auth=auth, max_models=max_models), host=host, port=port)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)


@keys_app.command("create")
def create(name: str) -> None:
    from afinar.store.keys import ApiKeys

    rec, secret = ApiKeys().create(name)
    console.print(f"{rec.id} ({name}): {secret}")
    err_console.print("[dim]shown once: store it now; only its hash is kept[/]")


@keys_app.command("list")
def list_keys() -> None:
    from afinar.store.keys import ApiKeys

    t = Table("id", "name", "prefix", "created", "last used")
    for k in ApiKeys().list():
        t.add_row(k.id, k.name, k.prefix + "…", str(k.created_at), str(k.last_used_at or ""))
    console.print(t)


@keys_app.command("revoke")
def revoke(key_id: str) -> None:
    from afinar.store.keys import ApiKeys

    ApiKeys().revoke(key_id)
    console.print(f"revoked {key_id}")
