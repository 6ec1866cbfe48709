"""The private AFINAR_HOME a training benchmark runs in (one helper for the scripts that need it):
the given folder, else a fresh temporary one removed at exit (it holds a converted copy of the
model), with afinar's ``src`` importable and all cores for torch unless told otherwise."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def private_home(given: str | None, prefix: str) -> Path:
    home = Path(given or tempfile.mkdtemp(prefix=prefix))
    if not given:
        atexit.register(shutil.rmtree, home, True)
    os.environ["AFINAR_HOME"] = str(home)
    os.environ.setdefault("AFINAR_THREADS", str(os.cpu_count() or 2))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    return home


def train_job(job) -> tuple[Any, float]:
    """Run the queued ``job`` as ``afinar worker`` does; the finished job and the training's
    wall seconds. A job that did not succeed ends the script (exit 1) with its error."""
    from afinar.tuning import Jobs, run_worker

    t0 = time.perf_counter()
    run_worker(exit_when_idle=True, log=lambda m: None)
    seconds = time.perf_counter() - t0
    job = Jobs().get(job.id)
    if job.status != "succeeded":
        print(f"error: job {job.id} {job.status}: {job.error}", file=sys.stderr)
        raise SystemExit(1)
    return job, seconds
