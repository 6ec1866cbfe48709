"""One error style for the whole CLI: ``error: <message>`` on stderr, never a traceback.

``run_app`` runs the typer app with click's standalone mode off, so every exception a command
raises reaches one place, ``describe``, which turns it into a message and an exit status:

- 2 for bad input: usage errors (a missing argument, an invalid value), service errors with a 4xx
  status (``AfinarError``: unknown model, knowledge base, job...), files that do not exist, are
  folders, cannot be read, are not UTF-8, or do not parse (JSON, YAML);
- 1 for service errors with a 5xx status, and for anything unexpected (its type and message are
  printed; ``AFINAR_DEBUG=1`` adds the traceback).

Commands therefore never catch these themselves; they raise, and the message is printed without
rich markup or hard wrapping (a long path stays copyable when the output is piped).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Sequence

import typer

# typer 0.29 (pinned <0.30 in pyproject.toml) vendors click; its exceptions live here
from typer._click import exceptions as click_errors

from afinar.cli.common import err_console
from afinar.errors import AfinarError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _path(e: OSError) -> str:
    return str(e.filename) if e.filename is not None else "a file"


def _yaml_error(e: Exception) -> str | None:
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        return None
    if not isinstance(e, yaml.YAMLError):
        return None
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if mark is None:
        return f"invalid YAML: {problem}"
    where = "" if not mark.name or mark.name.startswith("<") else f"{mark.name}: "
    return f"{where}invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def describe(e: BaseException) -> tuple[str, int]:
    """The one-line message and exit status for an exception a command raised."""
    if isinstance(e, AfinarError):
        return e.message, EXIT_BAD_INPUT if e.http_status < 500 else EXIT_FAILED
    if isinstance(e, click_errors.UsageError):
        msg = e.format_message()
        msg = msg[:1].lower() + msg[1:] if msg[:2] != msg[:2].upper() else msg
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        return msg.rstrip(".") + hint, e.exit_code
    if isinstance(e, click_errors.ClickException):
        return e.format_message(), e.exit_code
    if isinstance(e, FileNotFoundError):
        return f"{_path(e)}: no such file or folder", EXIT_BAD_INPUT
    if isinstance(e, IsADirectoryError):
        return f"{_path(e)}: is a folder, not a file", EXIT_BAD_INPUT
    if isinstance(e, NotADirectoryError):
        return f"{_path(e)}: not a folder", EXIT_BAD_INPUT
    if isinstance(e, PermissionError):
        return f"{_path(e)}: permission denied", EXIT_BAD_INPUT
    if isinstance(e, UnicodeDecodeError):
        return (f"the input is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8",
                EXIT_BAD_INPUT)
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}", EXIT_BAD_INPUT
    if (msg := _yaml_error(e)) is not None:
        return msg, EXIT_BAD_INPUT
    if isinstance(e, OSError):
        return (f"{_path(e)}: {e.strerror or e}", EXIT_BAD_INPUT) if e.filename else \
            (f"{e.strerror or e}", EXIT_FAILED)
    return (f"unexpected {type(e).__name__}: {e} (run with AFINAR_DEBUG=1 for the traceback)",
            EXIT_FAILED)


def print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr: the message as plain text, never wrapped."""
    err_console.print("[bold red]error[/]: ", end="", soft_wrap=True)
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def run_app(app: typer.Typer, argv: Sequence[str] | None, prog_name: str) -> int:
    """Run ``app``; every error becomes one ``error:`` line. Returns the exit status."""
    try:
        rv = app(args=argv, prog_name=prog_name, standalone_mode=False)
    except click_errors.NoArgsIsHelpError as e:  # ``afinar data``: the group's help
        err_console.print(e.format_message(), markup=False, highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except typer.Abort:
        print_error("aborted")
        return EXIT_FAILED
    except (KeyboardInterrupt, EOFError):
        err_console.print("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - the one place errors become messages
        message, code = describe(e)
        if os.environ.get("AFINAR_DEBUG"):
            traceback.print_exc(file=sys.stderr)
        print_error(message)
        return code
    # standalone mode off: an ``Exit`` comes back as its code; a command's own return is None
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
