"""Many workers, one database, one storage root (issue 18): a job is claimed by one worker at a
time, on SQLite and PostgreSQL; three worker processes on PostgreSQL, SIGKILLed at random, end
every job succeeded exactly once, never run one job twice at the same time, and resumed jobs
end with the same adapter as uninterrupted ones.

Measured: the three-worker test took 196 s (``pytest -q tests/unit/test_workers_multi.py -k
three_workers``) on the 2-core machine at a load average of 12 from other sessions; most of it
is each new worker process's first job (imports and first model load, ~50 s there), later jobs
took ~5 s each."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from afinar.models import Catalog
from afinar.settings import reset_settings
from afinar.store.db import reset_databases
from afinar.tuning import Jobs
from tests.unit.test_tuning import chat_rows, upload

CLAIMER = """
import sys, time
from pathlib import Path
from afinar.tuning.jobs import Jobs
jobs = Jobs()
Path(sys.argv[1] + ".ready-" + sys.argv[2]).touch()
while not Path(sys.argv[1]).exists():
    time.sleep(0.001)
got = []
while (job := jobs.claim(sys.argv[2])) is not None:
    got.append(job.id)
print(" ".join(got))
"""


@pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL
def test_two_processes_claiming_never_both_win(home, tiny_model_template, tmp_path):
    Catalog().add("tiny", tiny_model_template)
    train = upload(tmp_path, chat_rows(8), "t.jsonl")
    ids = {Jobs().create(model="tiny", training_file=train).id for _ in range(30)}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(go), f"claimer-{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ)) for i in range(2)]
    try:
        deadline = time.time() + 120
        while not all(Path(f"{go}.ready-claimer-{i}").exists() for i in range(2)):
            assert time.time() < deadline and all(p.poll() is None for p in procs), \
                [p.stderr.read() for p in procs if p.poll() is not None]
            time.sleep(0.05)
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    won = [set(out.split()) for out, _ in outs]
    assert not won[0] & won[1], "two workers claimed the same job"
    assert won[0] | won[1] == ids
    for i, got in enumerate(won):
        assert {Jobs().get(j).worker for j in got} <= {f"claimer-{i}"}
    assert Jobs().claim("late") is None  # nothing left, and nothing claimed twice


@pytest.mark.usefixtures("db_backend")
def test_a_stale_worker_cannot_write_to_a_job_another_took_over(home, tiny_model_template,
                                                                 tmp_path):
    from afinar.tuning.jobs import LeaseLost

    Catalog().add("tiny", tiny_model_template)
    job = Jobs().create(model="tiny", training_file=upload(tmp_path, chat_rows(8), "t.jsonl"))
    assert Jobs().claim("old").id == job.id
    old = Jobs().leased(job.id, "old")
    old.update(job.id, status="running")  # holds the lease: written
    old.event(job.id, "info", "message", "old worker step")
    Jobs().update(job.id, worker=None, status="queued")  # released as lost...
    assert Jobs().claim("new").id == job.id  # ...and taken over
    with pytest.raises(LeaseLost):
        old.update(job.id, status="succeeded", worker=None)
    with pytest.raises(LeaseLost):
        old.event(job.id, "info", "message", "stale step")
    with pytest.raises(LeaseLost), old.db.session() as s:  # checkpoints, model records
        s.execute(__import__("sqlalchemy").text("SELECT 1"))
    j = Jobs().get(job.id)
    assert (j.status, j.worker) == ("queued", "new")
    msgs = [e.message for e in Jobs().events(job.id)]
    assert "old worker step" in msgs and "stale step" not in msgs


@pytest.mark.usefixtures("db_backend")
def test_queues_keep_jobs_for_their_workers(home, tiny_model_template, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from afinar.server.app import create_app
    from tests.helpers import run_cli

    Catalog().add("tiny", tiny_model_template)
    train = upload(tmp_path, chat_rows(8), "t.jsonl")
    plain = Jobs().create(model="tiny", training_file=train)
    app = create_app(auth=False)
    app.state.spawn_workers = False
    with TestClient(app) as http:
        r = http.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": train,
                                                    "metadata": {"queue": "gpu"}})
        assert r.status_code == 200, r.text
        gpu = r.json()["id"]
        assert r.json()["metadata"] == {"queue": "gpu"}  # OpenAI's shape, unchanged
        bad = http.post("/v1/fine_tuning/jobs", json={
            "model": "tiny", "training_file": train, "metadata": {"queue": "no spaces"}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "metadata.queue"
    assert Jobs().get(gpu).queue == "gpu" and Jobs().get(plain.id).queue == "default"
    assert Jobs().claim("cpu-worker").id == plain.id
    assert Jobs().claim("cpu-worker") is None  # the gpu job waits for a gpu worker
    assert Jobs().claim("gpu-worker", ("gpu",)).id == gpu
    upload(tmp_path, chat_rows(16), "t16.jsonl")
    code, _, err = run_cli(capsys, "tune", "create", "--model", "tiny", "--train",
                           str(tmp_path / "t16.jsonl"), "--queue", "a/b", "--detach")
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error:") and "queue" in last, err


def test_concurrency_runs_jobs_in_slot_processes(home, tiny_model_template, tmp_path):
    from afinar.tuning import run_worker

    Catalog().add("tiny", tiny_model_template)
    train = upload(tmp_path, chat_rows(16), "t.jsonl")
    ids = [Jobs().create(model="tiny", training_file=train, seed=3,
                         hyperparameters={"n_epochs": 1, "batch_size": 8}).id for _ in range(2)]
    logs: list[str] = []
    assert run_worker(concurrency=2, exit_when_idle=True, log=logs.append, poll_s=0.2) == 0
    assert [Jobs().get(j).status for j in ids] == ["succeeded", "succeeded"]
    pids = logs[0].split("pids ")[1].split(", ")
    assert len(set(pids)) == 2 and str(os.getpid()) not in pids  # two slots, not this process


# -- three workers, random SIGKILLs ------------------------------------------------------
WORKER = """
import sys, time
from afinar.tuning.worker import run_worker
out = open(sys.argv[1], "a", buffering=1)
def log(m):
    out.write(f"{time.time():.3f} {m}\\n")
run_worker(log=log, poll_s=0.2)
"""
# A live worker starved of CPU for longer than the lease loses its job (it is fenced: its
# writes fail) and may still be computing when another takes the job over; the lease here is
# long enough for a 2-core machine under load, so the intervals below must never overlap.
LEASE = 10
N_JOBS, N_WORKERS, N_KILLS = 10, 3, 3
HP = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 20,
      "checkpoint_every_steps": 4}


@pytest.fixture
def shared_pg(home, pg_server, tiny_model_template, monkeypatch):
    """One PostgreSQL database and one AFINAR_HOME for every worker process."""
    monkeypatch.setenv("AFINAR_DATABASE_URL", pg_server.new_database())
    monkeypatch.setenv("AFINAR_JOB_LEASE_S", str(LEASE))
    monkeypatch.setenv("AFINAR_JOB_HEARTBEAT_S", "1")
    monkeypatch.setenv("AFINAR_JOB_MAX_ATTEMPTS", "20")
    monkeypatch.setenv("AFINAR_THREADS", "1")
    reset_settings()
    reset_databases()
    Catalog().add("tiny", tiny_model_template)
    return home


class Worker:
    def __init__(self, folder: Path, n: int):
        self.log = folder / f"worker-{n}.log"
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(self.log)],
                                     env=dict(os.environ), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.killed_at: float | None = None

    def lines(self) -> list[tuple[float, str]]:
        if not self.log.exists():
            return []
        return [(float(t), m) for t, _, m in (line.partition(" ") for line in
                                              self.log.read_text().splitlines())]

    def current(self) -> str | None:
        """The job it runs now: its last ``running`` line without an end line after it."""
        job = None
        for _, m in self.lines():
            if m.startswith("running "):
                job = m.split()[1]
            elif job and m.startswith(f"{job}: "):
                job = None
        return job

    def intervals(self) -> list[tuple[str, float, float]]:
        """(job, start, end) of each job it ran; a job it was killed running ends then."""
        out, open_ = [], {}
        for t, m in self.lines():
            if m.startswith("running "):
                open_[m.split()[1]] = t
            elif ": " in m and m.split(":")[0] in open_:
                job = m.split(":")[0]
                out.append((job, open_.pop(job), t))
        out += [(job, t, self.killed_at or time.time()) for job, t in open_.items()]
        return out


def _adapter(job_id: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Catalog().get(Jobs().get(job_id).fine_tuned_model).path
    return load_file(str(path / "adapter_model.safetensors"))


def test_three_workers_with_random_kills_run_each_job_once(shared_pg, tmp_path):
    # 32 rows, batch 4, 2 epochs: 16 steps, a checkpoint every 4, so a quiet machine too
    # leaves time to kill a worker between a job's first checkpoint and its end
    train = upload(tmp_path, chat_rows(32), "t.jsonl")
    ids = [Jobs().create(model="tiny", training_file=train, hyperparameters=HP, seed=11).id
           for _ in range(N_JOBS)]
    rnd = random.Random(18)
    workers = [Worker(tmp_path, n) for n in range(N_WORKERS)]
    killed: dict[str, int] = {}  # job -> kills that hit it after a checkpoint
    try:
        deadline, last_kill = time.time() + 480, time.time()
        while True:
            statuses = {j: Jobs().get(j).status for j in ids}
            if all(s in ("succeeded", "failed", "cancelled") for s in statuses.values()):
                break
            assert time.time() < deadline, statuses
            alive = [w for w in workers if w.killed_at is None]
            if len(killed) < N_KILLS and time.time() - last_kill > 0.5:
                targets = [(w, j) for w in alive if (j := w.current()) and j not in killed
                           and Jobs().checkpoints(j) and statuses[j] == "running"]
                if targets:
                    w, job = rnd.choice(targets)
                    time.sleep(rnd.uniform(0, 0.3))
                    w.proc.send_signal(signal.SIGKILL)
                    w.proc.wait()
                    w.killed_at, last_kill = time.time(), time.time()
                    if w.current() == job:  # still running it when killed (not just ended)
                        killed[job] = killed.get(job, 0) + 1
                    workers.append(Worker(tmp_path, len(workers)))  # a host comes back
            time.sleep(0.1)
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.terminate()
        for w in workers:
            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()

    assert len(killed) == N_KILLS, "the kills did not land mid-job (jobs too short here?)"
    for j in ids:
        job = Jobs().get(j)
        assert job.status == "succeeded", (j, job.error)
        events = [e.message for e in Jobs().events(j)]
        assert events.count("The job has successfully completed") == 1, events
    # every job ended succeeded once, by one worker, and no two workers ran it at once
    spans: dict[str, list[tuple[float, float, str]]] = {}
    ended: dict[str, int] = {}
    for n, w in enumerate(workers):
        for job, start, end in w.intervals():
            spans.setdefault(job, []).append((start, end, f"worker-{n}"))
        for _, m in w.lines():
            if m.endswith(": succeeded"):
                ended[m.split(":")[0]] = ended.get(m.split(":")[0], 0) + 1
    assert ended == {j: 1 for j in ids}
    lost = [(n, m) for n, w in enumerate(workers) for _, m in w.lines() if m.endswith(": lost")]
    assert not lost, f"live workers lost their lease (the machine starved them): {lost}"
    for job, runs in spans.items():
        runs.sort()
        for (_, end, who), (start, _, other) in zip(runs, runs[1:]):
            assert start >= end, f"{job}: {other} started at {start} before {who} ended {end}"
    for job in killed:
        assert len(spans[job]) >= 2 and any(
            e.message.startswith("Resumed from step") for e in Jobs().events(job)), job
    # resumed jobs end with the adapter of uninterrupted ones (same data, seed, settings)
    plain = [j for j in ids if j not in killed]
    ref = _adapter(plain[0])
    assert any(v.abs().sum() > 0 for k, v in ref.items() if "lora_B" in k)  # it trained
    for j in ids:
        got = _adapter(j)
        assert got.keys() == ref.keys()
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6, msg=f"{j} {k}")
