"""Running due schedules (``afinar.store.schedules``) in a worker, between jobs.

Each due schedule is claimed under a lease and run as a subprocess ``python -m afinar ARGV...``
(the worker imports nothing of the commands it runs); its lease is renewed every
``AFINAR_JOB_HEARTBEAT_S`` while it runs, and its exit status and output (stdout and stderr
together, the tail) are recorded with the run. A worker stopped mid-run (SIGTERM, Ctrl-C) stops
the command and hands the schedule back, due at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from afinar.settings import Settings
from afinar.store.db import get_database
from afinar.store.schedules import MAX_OUTPUT, Claimed, Schedules


def command_line(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "afinar", *argv]


def run_claimed(schedules: Schedules, claimed: Claimed, worker: str, settings: Settings,
                log=print) -> int:
    """Run one claimed schedule to its end; its exit status (recorded with the run)."""
    env = {**os.environ, "AFINAR_HOME": str(settings.home)}
    if settings.database_url:
        env["AFINAR_DATABASE_URL"] = settings.database_url
    lease = settings.job_lease_s
    beat = min(settings.job_heartbeat_s, lease / 3)
    log(f"schedule {claimed.schedule.id}: afinar {' '.join(claimed.schedule.argv)}")
    with tempfile.TemporaryFile("w+b") as out:
        proc = subprocess.Popen(command_line(claimed.schedule.argv), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            while True:
                try:
                    rc = proc.wait(timeout=beat)
                    break
                except subprocess.TimeoutExpired:
                    if not schedules.renew(claimed, worker, lease):
                        log(f"schedule {claimed.schedule.id}: lease lost; stopping it")
                        _stop(proc)
                        return -1
        except BaseException:  # the worker is stopping: stop the command, hand it back
            _stop(proc)
            schedules.release(claimed, worker)
            raise
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - 4 * MAX_OUTPUT))
        output = out.read().decode("utf-8", "replace")
    schedules.finish(claimed, worker, rc, output)
    log(f"schedule {claimed.schedule.id}: exit {rc}")
    return rc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_due(settings: Settings, worker: str, log=print, limit: int = 10) -> int:
    """Run the schedules due now, one after another (at most ``limit``); how many ran."""
    schedules = Schedules(get_database(settings.db_url))
    ran, started = 0, time.time()
    while ran < limit:
        claimed = schedules.claim(worker, settings.job_lease_s, now=started)
        if claimed is None:
            return ran
        run_claimed(schedules, claimed, worker, settings, log)
        ran += 1
    return ran
