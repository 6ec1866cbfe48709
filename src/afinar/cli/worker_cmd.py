"""``afinar worker``: run fine-tuning jobs from the queue (any number of workers, on any hosts
sharing the database and the storage root; see docs/scaling.md)."""

from __future__ import annotations

import typer

from afinar.cli.common import err_console


def worker(
    exit_when_idle: bool = typer.Option(False, "--exit-when-idle",
                                        help="Stop when no job is waiting."),
    concurrency: int = typer.Option(1, "--concurrency", "-n", min=1, max=64,
                                    help="Jobs at once, each in a process of its own."),
    queue: list[str] = typer.Option(None, "--queue", "-q", help="Take jobs of this queue "
                                    "(repeatable; default: default), e.g. gpu."),
) -> None:
    """Run fine-tuning jobs from the queue. Several workers, here or on other hosts sharing
    the database (AFINAR_DATABASE_URL) and AFINAR_HOME, share the work: a job is claimed by
    one worker at a time and resumed elsewhere from its last checkpoint if its worker dies."""
    import time

    from afinar.tuning import run_worker

    def log(message: str) -> None:
        err_console.print(f"{time.strftime('%H:%M:%S')} {message}", markup=False,
                          highlight=False, soft_wrap=True)

    run_worker(exit_when_idle=exit_when_idle, log=log, concurrency=concurrency,
               queues=tuple(queue or ("default",)))
