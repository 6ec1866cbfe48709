"""The ``afinar`` command line: thin adapters that parse arguments, call services, render output."""

from __future__ import annotations

import sys

import typer

from afinar.cli import (
    access_cmd,
    ask_cmd,
    chat_cmd,
    config_cmd,
    data_cmd,
    demo_cmd,
    eval_cmd,
    feedback_cmd,
    graders_cmd,
    improve_cmd,
    kb_cmd,
    models_cmd,
    monitor_cmd,
    plugins_cmd,
    promote_cmd,
    schedule_cmd,
    serve_cmd,
    tune_cmd,
    worker_cmd,
)

app = typer.Typer(
    name="afinar",
    help="Adapt open LLMs to your domain: fine-tuning, RAG, evaluation, OpenAI-compatible serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(models_cmd.app, name="models")
app.add_typer(data_cmd.app, name="data")
app.add_typer(tune_cmd.app, name="tune")
app.add_typer(kb_cmd.app, name="kb")
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(feedback_cmd.app, name="feedback")
app.add_typer(graders_cmd.app, name="graders")
app.add_typer(schedule_cmd.app, name="schedule")
app.add_typer(ask_cmd.memory_app, name="memory")
app.command("ask")(ask_cmd.ask)
app.add_typer(serve_cmd.keys_app, name="keys")
app.add_typer(access_cmd.projects_app, name="projects")
app.command("audit")(access_cmd.audit)
app.command("serve")(serve_cmd.serve)
app.command("worker")(worker_cmd.worker)
app.command("chat")(chat_cmd.chat)
app.command("demo")(demo_cmd.demo)
app.command("plugins")(plugins_cmd.plugins)
app.command("promote")(promote_cmd.promote)
app.command("improve")(improve_cmd.improve)
app.command("monitor")(monitor_cmd.monitor)


def _version(value: bool) -> None:
    if value:
        from afinar import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """afinar: fine-tuning, RAG and evaluation for open LLMs."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error, from click's usage errors to a missing file, becomes one
    ``error:`` line on stderr (``afinar.cli.errors``)."""
    from afinar.cli.errors import run_app

    sys.exit(run_app(app, argv, "afinar"))
