"""The worker: a process that takes jobs from the database and runs them, one at a time.

One worker per ``AFINAR_HOME`` trains at a time, enforced by an exclusive ``flock`` on
``AFINAR_HOME/worker.lock``: the kernel releases it when the process dies, even by SIGKILL, so
holding the lock proves no other worker is alive here. A worker that takes the lock first turns
any job still marked ``running`` back into ``queued`` (its worker died); it then resumes from the
job's last checkpoint with the same data order.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from afinar.settings import Settings, get_settings
from afinar.store.tables import JobRecord
from afinar.tuning.jobs import Jobs
from afinar.tuning.runner import JobRunner, new_worker_name


class WorkerLock:
    def __init__(self, home: Path):
        home.mkdir(parents=True, exist_ok=True)
        self.path = home / "worker.lock"
        self.fd: int | None = None

    def acquire(self, wait: bool) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self) -> bool:
        if self.fd is not None:
            return False
        if not self.acquire(wait=False):
            return True
        self.release()
        return False


def recover_orphans(jobs: Jobs) -> list[str]:
    """Jobs left ``running`` by a dead worker go back to the queue, or fail once they have lost
    ``AFINAR_JOB_MAX_ATTEMPTS`` workers (call with the lock held: no worker is alive here)."""
    with jobs.db.session() as s:
        orphans = list(s.scalars(select(JobRecord).where(JobRecord.status == "running")))
    return [j.id for j in orphans if jobs.release_lost(j, "its worker is gone")]


def _exit_on_sigterm():
    """SIGTERM (``afinar serve`` stopping, systemd, Docker) becomes ``SystemExit`` in the main
    thread, so ``finally`` blocks run (the lock is released, a job in progress stays to be
    resumed from its last checkpoint by the next worker) instead of the process vanishing."""
    import signal
    import threading

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def run_worker(settings: Settings | None = None, *, exit_when_idle: bool = False,
               poll_s: float = 1.0, log=print) -> int:
    """Run jobs until stopped (or until none is waiting, with ``exit_when_idle``)."""
    settings = settings or get_settings()
    lock = WorkerLock(settings.home)
    if not lock.acquire(wait=not exit_when_idle):
        log("another worker is running jobs in this AFINAR_HOME")
        return 0
    name = new_worker_name()
    jobs = Jobs(settings)
    done = 0
    restore = _exit_on_sigterm()
    try:
        for job_id in recover_orphans(jobs):
            log(f"recovered {job_id}")
        while True:
            job = jobs.claim(name)
            if job is None:
                if exit_when_idle:
                    return done
                time.sleep(poll_s)
                continue
            log(f"running {job.id}")
            status = JobRunner(job, settings, name).run()
            log(f"{job.id}: {status}")
            done += 1
    finally:
        lock.release()
        restore()


def spawn_worker(settings: Settings | None = None) -> subprocess.Popen | None:
    """Start a detached worker that exits when the queue is empty (none if one is running)."""
    settings = settings or get_settings()
    if WorkerLock(settings.home).held_elsewhere():
        return None
    env = {**os.environ, "AFINAR_HOME": str(settings.home)}
    with open(settings.home / "worker.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "afinar", "worker", "--exit-when-idle"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
