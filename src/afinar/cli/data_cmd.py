"""``afinar data``: validate, preview, split, check-leak, pii, convert, synth."""

from __future__ import annotations

import typer

from afinar.cli import data_pii_cmd, data_split_cmd, data_synth_cmd, data_validate_cmd

app = typer.Typer(help="Datasets: validation, statistics, previews, splits, PII, converters.",
                  no_args_is_help=True)


# Each command group lives in its own module and adds itself to ``app``.
for _module in (data_validate_cmd, data_pii_cmd, data_split_cmd, data_synth_cmd):
    _module.register(app)
