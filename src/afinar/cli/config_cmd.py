"""``afinar config``: show the effective settings."""

from __future__ import annotations

import typer
from rich.table import Table

from afinar.cli.common import console, print_json
from afinar.settings import get_settings

app = typer.Typer(help="Settings (from AFINAR_* environment variables).", no_args_is_help=True)


@app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the effective settings."""
    values = get_settings().describe()
    if as_json:
        print_json(values)
        return
    t = Table("setting", "value", "env var")
    for k, v in values.items():
        t.add_row(k, v, f"AFINAR_{k.upper()}")
    console.print(t)
