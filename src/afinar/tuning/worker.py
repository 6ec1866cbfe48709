"""Workers: processes that take fine-tuning jobs from the database and run them.

Any number of workers, on any number of hosts, may share one database (PostgreSQL for several
hosts) and one storage root (``AFINAR_HOME`` on a filesystem every host mounts). Correctness
rests on the database alone (``jobs.py``): a worker claims a job in one guarded transaction,
renews its lease by a heartbeat, and guards every write with it; a worker that dies or loses its
host leaves a lease that expires after ``AFINAR_JOB_LEASE_S``, and the next worker to claim
resumes the job from its last checkpoint with the same data order. Two workers never hold the
same job.

``AFINAR_HOME/worker.lock`` is only the local fast path: every worker here holds it shared, so
that an exclusive ``flock`` succeeds only when no worker on this host is alive (the kernel drops
a dead process's lock, even after SIGKILL). ``spawn_worker`` (the CLI's and the server's
auto-start) starts one only then, and a worker that starts alone releases at once the jobs this
host's dead workers held, instead of waiting out their lease.

``--concurrency N`` runs N slots, each a process of its own that claims and runs one job at a
time: training is compute-bound and holds the GIL between kernels, torch's thread pool and CUDA
state are per process, and a crash or out-of-memory kill ends one job only, which its lease then
hands to another slot exactly like a dead worker's.

Between jobs a worker runs the schedules that are due (``afinar schedule``,
``tuning/scheduled.py``), each claimed under a lease of its own.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from afinar.settings import Settings, get_settings
from afinar.tuning.jobs import DEFAULT_QUEUE, Jobs, LeaseLost, queue_name
from afinar.tuning.runner import JobRunner, new_worker_name
from afinar.tuning.scheduled import run_due


class WorkerLock:
    """``AFINAR_HOME/worker.lock``: shared by every live worker here (``share``), exclusive
    (``acquire``) only when none is alive. The first worker to hold it alone writes its pid."""

    def __init__(self, home: Path):
        home.mkdir(parents=True, exist_ok=True)
        self.path = home / "worker.lock"
        self.fd: int | None = None

    def acquire(self, wait: bool) -> bool:
        """Exclusive: True when no other worker here holds the lock."""
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

    def share(self) -> None:
        """Hold the lock shared (from exclusive, or from nothing) while this worker runs."""
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self) -> bool:
        if self.fd is not None:
            return False
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a lock we took
        return False


def recover_orphans(jobs: Jobs, host: str | None = None) -> list[str]:
    """Release, without waiting for their lease, the jobs held by workers of this host (call
    when no worker here is alive: ``WorkerLock.acquire`` succeeded), and every job whose lease
    has expired. Each goes back to the queue, or fails once ``AFINAR_JOB_MAX_ATTEMPTS`` workers
    have been lost on it. Another host's live worker keeps its job."""
    host = host or socket.gethostname()
    out = []
    for job in jobs.held():
        ours = (job.worker or "").split(":", 1)[0] == host
        if (ours or jobs.expired(job)) and jobs.release_lost(job, "its worker is gone"):
            out.append(job.id)
    return out


def _exit_on_sigterm():
    """SIGTERM (``afinar serve`` stopping, systemd, Docker) becomes ``SystemExit`` in the main
    thread, so ``finally`` blocks run (the lock is released, a job in progress is handed back to
    the queue to be resumed from its last checkpoint) instead of the process vanishing."""
    import signal
    import threading

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _hand_back(jobs: Jobs, job_id: str, worker: str, why: str) -> None:
    """A stopping worker gives its job back now (guarded by its lease), so that another worker
    need not wait out the lease; the next one resumes from the last checkpoint."""
    job = jobs.get(job_id)
    if job.worker != worker or job.status not in ("validating_files", "queued", "running"):
        return
    try:
        jobs.leased(job_id, worker).update(
            job_id, worker=None, status="queued" if job.status == "running" else job.status)
    except LeaseLost:
        return
    jobs.event(job_id, "warn", "message", f"The worker running this job stopped ({why}); "
               "queued again: the next worker resumes from its last checkpoint")


def run_worker(settings: Settings | None = None, *, exit_when_idle: bool = False,
               poll_s: float = 1.0, log=print, queues: tuple[str, ...] = (DEFAULT_QUEUE,),
               concurrency: int = 1, slot: bool = False) -> int:
    """Run jobs of ``queues`` until stopped (or until none is waiting, with
    ``exit_when_idle``); the number of jobs this process ran. ``concurrency`` > 1 runs that many
    slot processes and supervises them (``slot``: this process is one of them)."""
    settings = settings or get_settings()
    queues = tuple(queue_name(q) for q in queues) or (DEFAULT_QUEUE,)
    jobs = Jobs(settings)
    lock = WorkerLock(settings.home)
    alone = lock.acquire(wait=False)
    if not alone and exit_when_idle and not slot:
        log("another worker is running jobs in this AFINAR_HOME")
        return 0
    restore = _exit_on_sigterm()
    try:
        if alone:
            for job_id in recover_orphans(jobs):
                log(f"recovered {job_id}")
        lock.share()
        if concurrency > 1:
            return _supervise(settings, concurrency, queues, exit_when_idle, poll_s, log)
        return _loop(jobs, settings, queues, exit_when_idle, poll_s, log)
    finally:
        lock.release()
        restore()


def _loop(jobs: Jobs, settings: Settings, queues: tuple[str, ...], exit_when_idle: bool,
          poll_s: float, log) -> int:
    name, done = new_worker_name(), 0
    while True:
        run_due(settings, name, log)  # due schedules run between jobs
        job = jobs.claim(name, queues)
        if job is None:
            if exit_when_idle:
                return done
            time.sleep(poll_s)
            continue
        log(f"running {job.id}")
        try:
            status = JobRunner(job, settings, name).run()
        except BaseException as e:  # stopping (SIGTERM, Ctrl-C): hand the job back at once
            if isinstance(e, (SystemExit, KeyboardInterrupt)):
                _hand_back(jobs, job.id, name, f"{type(e).__name__}: the worker was stopped")
            raise
        log(f"{job.id}: {status}")
        done += 1


def _die_with_parent() -> None:
    """In a slot, before exec: Linux sends it SIGTERM when its supervisor dies, even by SIGKILL
    (prctl PR_SET_PDEATHSIG), so no slot outlives its worker; elsewhere nothing."""
    import signal

    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _supervise(settings: Settings, n: int, queues: tuple[str, ...], exit_when_idle: bool,
               poll_s: float, log) -> int:
    """N slot processes; one that dies (a crash, the OOM killer) is started again (its job is
    released by the lease, or at once when no worker here is left); SIGTERM stops them all."""
    env = {**os.environ, "AFINAR_HOME": str(settings.home)}
    argv = [sys.executable, "-c", "import sys; from afinar.tuning.worker import slot_main; "
            "sys.exit(slot_main(sys.argv[1:]))", ",".join(queues)]
    if exit_when_idle:
        argv.append("--exit-when-idle")

    def start(i: int) -> subprocess.Popen:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)

    procs = {i: start(i) for i in range(n)}
    log(f"{n} slots serving queue(s) {', '.join(queues)}: pids "
        f"{', '.join(str(p.pid) for p in procs.values())}")
    try:
        while procs:
            for i, p in list(procs.items()):
                rc = p.poll()
                if rc is None:
                    continue
                if exit_when_idle and rc == 0:
                    del procs[i]
                    continue
                log(f"slot {i} (pid {p.pid}) exited with {rc}; starting it again")
                procs[i] = start(i)
            time.sleep(poll_s)
        return 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def slot_main(argv: list[str]) -> int:
    """One slot of ``afinar worker --concurrency N`` (queues comma-separated, then flags)."""
    queues = tuple(argv[0].split(",")) if argv else (DEFAULT_QUEUE,)
    run_worker(queues=queues, exit_when_idle="--exit-when-idle" in argv, slot=True,
               log=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


def spawn_worker(settings: Settings | None = None) -> subprocess.Popen | None:
    """Start a detached worker for the default queue that exits when the queue is empty (none
    if a worker already runs here)."""
    settings = settings or get_settings()
    if WorkerLock(settings.home).held_elsewhere():
        return None
    env = {**os.environ, "AFINAR_HOME": str(settings.home)}
    with open(settings.home / "worker.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "afinar", "worker", "--exit-when-idle"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
