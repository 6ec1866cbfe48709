"""``afinar data``: validate, preview, split, check-leak, pii, convert."""

from __future__ import annotations

import typer

app = typer.Typer(help="Datasets: validation, statistics, previews, splits, PII, converters.",
                  no_args_is_help=True)


def _register() -> None:
    # Each command group lives in its own module and adds itself to ``app``.
    import importlib

    for name in ("data_validate_cmd", "data_pii_cmd", "data_split_cmd"):
        try:
            mod = importlib.import_module(f"afinar.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"afinar.cli.{name}":
                raise
            continue
        mod.register(app)


_register()
