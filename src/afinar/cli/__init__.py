"""The ``afinar`` command line: thin adapters that parse arguments, call services, render output."""

from __future__ import annotations

import sys

import typer

from afinar.cli import chat_cmd, config_cmd, models_cmd
from afinar.cli.common import err_console
from afinar.errors import AfinarError

app = typer.Typer(
    name="afinar",
    help="Adapt open LLMs to your domain: fine-tuning, RAG, evaluation, OpenAI-compatible serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(models_cmd.app, name="models")
app.command("chat")(chat_cmd.chat)
app.command("demo")(chat_cmd.demo)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")):
    if version:
        from afinar import __version__

        typer.echo(__version__)
        raise typer.Exit()


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="afinar", standalone_mode=False)
    except AfinarError as e:
        err_console.print(f"[bold red]error[/]: {e.message}", highlight=False)
        sys.exit(2 if e.http_status < 500 else 1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except typer.Abort:
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors and the like
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
