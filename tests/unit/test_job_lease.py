"""A job whose worker died shows as such: reads of a job (``Jobs.get``/``list``, so ``tune show``,
``tune list`` and ``GET /v1/fine_tuning/jobs``) release a ``running`` job whose heartbeat is
older than the lease to ``queued`` (the next worker resumes it) or, after too many lost workers,
to ``failed`` with the reason; a live worker's heartbeat keeps its job ``running`` through steps
and loading; a worker that lost its job stops without touching it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from afinar.models import Catalog
from afinar.settings import get_settings, reset_settings
from afinar.store.files import Files
from afinar.tuning import Jobs
from afinar.tuning.runner import JobRunner
from afinar.tuning.worker import recover_orphans, run_worker
from tests.helpers import run_cli
from tests.unit.test_tuning import chat_rows, upload, when_step

LEASE = 3


@pytest.fixture
def lease_home(home, tiny_model_template, monkeypatch):
    monkeypatch.setenv("AFINAR_JOB_LEASE_S", str(LEASE))
    monkeypatch.setenv("AFINAR_JOB_HEARTBEAT_S", "0.5")
    reset_settings()
    Catalog().add("tiny", tiny_model_template)
    return home


def _dead_worker_job(tmp_path, age: float, worker: str = "host:1:dead", **info) -> str:
    """A job as a worker that died ``age`` seconds after its last heartbeat leaves it."""
    job = Jobs().create(model="tiny", training_file=upload(tmp_path, chat_rows(12), "t.jsonl"))
    Jobs().update(job.id, status="running", worker=worker,
                  heartbeat_at=int(time.time() - age), info=info or {})
    return job.id


def _messages(job_id: str) -> list[str]:
    return [e.message for e in Jobs().events(job_id)]


def test_a_fresh_heartbeat_stays_running_a_stale_one_is_queued(lease_home, tmp_path):
    alive = _dead_worker_job(tmp_path, age=0)
    assert Jobs().get(alive).status == "running"
    dead = _dead_worker_job(tmp_path, age=LEASE + 2)
    job = Jobs().get(dead)
    assert job.status == "queued" and job.worker is None
    assert job.info["lost_workers"] == 1
    msg = _messages(dead)[-1]
    assert "stopped (no heartbeat for" in msg and "resumes from its last checkpoint" in msg
    assert Jobs().get(dead).status == "queued"
    assert sum("stopped" in m for m in _messages(dead)) == 1  # released once, not per read


def test_list_releases_too_and_the_cli_shows_it(lease_home, tmp_path, capsys):
    dead = _dead_worker_job(tmp_path, age=LEASE + 2)
    assert {j.id: j.status for j in Jobs().list()}[dead] == "queued"
    dead2 = _dead_worker_job(tmp_path, age=LEASE + 2)
    code, out, err = run_cli(capsys, "tune", "show", dead2)
    assert code == 0, err
    assert json.loads(out)["status"] == "queued"


def test_too_many_lost_workers_fail_the_job_with_the_reason(lease_home, tmp_path):
    job_id = _dead_worker_job(tmp_path, age=LEASE + 2, lost_workers=2)  # limit 3 by default
    job = Jobs().get(job_id)
    assert job.status == "failed"
    assert job.error["code"] == "worker_lost"
    assert "lost 3 time(s)" in job.error["message"] and job.finished_at
    # recovery by a worker starting alone on this host counts the same way; it releases this
    # host's workers' jobs at once, never a live job of another host's worker
    other = _dead_worker_job(tmp_path, age=0, worker=f"{socket.gethostname()}:1:dead",
                             lost_workers=2)
    elsewhere = _dead_worker_job(tmp_path, age=0, worker="other-host:1:alive")
    assert recover_orphans(Jobs()) == [other]
    assert Jobs().get(other).status == "failed"
    assert Jobs().get(elsewhere).status == "running"


def test_the_http_api_reports_a_lost_worker(lease_home, tmp_path):
    from afinar.server.app import create_app

    app = create_app(auth=False)
    app.state.spawn_workers = False
    with TestClient(app) as http:
        train = upload(tmp_path, chat_rows(12), "t.jsonl")
        r = http.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": train})
        assert r.status_code == 200, r.text
        job_id = r.json()["id"]
        Jobs().update(job_id, status="running", worker="host:1:dead",
                      heartbeat_at=int(time.time() - LEASE - 2))
        assert http.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] == "queued"
        Jobs().update(job_id, status="running", worker="host:2:dead",
                      heartbeat_at=int(time.time() - LEASE - 2))
        listed = {j["id"]: j["status"] for j in http.get("/v1/fine_tuning/jobs").json()["data"]}
        assert listed[job_id] == "queued"


HP = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 20,
      "checkpoint_every_steps": 5}


def test_a_killed_worker_is_seen_within_the_lease_and_resumed(lease_home, tmp_path):
    train = upload(tmp_path, chat_rows(120), "t.jsonl")
    job = Jobs().create(model="tiny", training_file=train, hyperparameters={**HP, "n_epochs": 30},
                        seed=4)
    env = {**os.environ, "AFINAR_HOME": str(lease_home)}
    proc = subprocess.Popen([sys.executable, "-m", "afinar", "worker", "--exit-when-idle"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # alive: reads during more than a lease of training keep seeing it running
        deadline = time.time() + 180
        first = None
        while time.time() < deadline:
            j = Jobs().get(job.id)
            steps = [e.data["step"] for e in Jobs().events(job.id) if e.type == "metrics"]
            if steps and first is None:
                first = time.time()
            if first is not None:
                assert j.status == "running", _messages(job.id)[-3:]
                if time.time() - first > LEASE + 1 and steps[-1] >= 6:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the worker did not train for a lease's time")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = time.time()
    while Jobs().get(job.id).status == "running":
        assert time.time() - killed_at < LEASE + 3, "still running past the lease"
        time.sleep(0.2)
    assert Jobs().get(job.id).status == "queued"
    assert any("no heartbeat for" in m for m in _messages(job.id))
    assert run_worker(exit_when_idle=True, log=lambda m: None) == 1
    done = Jobs().get(job.id)
    assert done.status == "succeeded", done.error
    assert any(m.startswith("Resumed from step") for m in _messages(job.id))


def test_a_worker_that_lost_its_job_stops_and_leaves_it(lease_home, tmp_path):
    train = upload(tmp_path, chat_rows(80), "t.jsonl")
    job = Jobs().create(model="tiny", training_file=train, hyperparameters=HP, seed=4)

    def taken_over(job_id):  # as a reader that found the lease expired, then a new worker
        Jobs().update(job_id, status="running", worker="host:2:new",
                      heartbeat_at=int(time.time()))

    t = when_step(job.id, 3, taken_over)
    assert JobRunner(Jobs().get(job.id), get_settings(), "host:1:old").run() == "lost"
    t.join()
    j = Jobs().get(job.id)
    assert (j.status, j.worker, j.fine_tuned_model) == ("running", "host:2:new", None)
    assert any("lost this job" in m for m in _messages(job.id))
    assert not any(f.purpose == "fine-tune-results" for f in Files().list())
