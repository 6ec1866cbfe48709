"""Schedules (``afinar schedule``): add, list, remove; one claimer per due schedule; the worker
runs a due ``kb sync`` as ``python -m afinar`` between jobs and records its exit status and
output; CLI errors are one ``error:`` line, exit 2."""

from __future__ import annotations

import threading
import time

import pytest

from afinar.errors import InvalidRequest, NotFound
from afinar.store.db import get_database
from afinar.store.schedules import Schedules, check_argv, parse_duration
from tests.helpers import run_cli

pytestmark = pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL


def test_durations_and_the_whitelist():
    assert [parse_duration(x) for x in ("30s", "5m", "1h", "1d", "1.5h")] == \
        [30, 300, 3600, 86400, 5400]
    for bad in ("3x", "", "1", "m5", "0s"):
        with pytest.raises(InvalidRequest):
            parse_duration(bad)
    assert check_argv(["afinar", "kb", "sync", "docs", "/d"]) == ["kb", "sync", "docs", "/d"]
    assert check_argv(["kb", "watch", "docs", "/d", "--once"])[:2] == ["kb", "watch"]
    with pytest.raises(InvalidRequest, match="needs --once"):
        check_argv(["kb", "watch", "docs", "/d"])  # a watch never ends: once only
    with pytest.raises(InvalidRequest, match="cannot be scheduled"):
        check_argv(["serve"])
    with pytest.raises(InvalidRequest):
        check_argv(["kb", ""])


def test_add_list_remove(home):
    s = Schedules(get_database())
    a = s.add(["kb", "sync", "docs", "/srv/docs"], 86400)
    b = s.add(["improve", "--alias", "m"], None,
              owner={"project_id": "p1", "owner_key_id": "key-1"})
    assert [x.id for x in s.list()] == [a.id, b.id]
    assert s.get(b.id).project_id == "p1" and s.get(b.id).every_s is None
    s.remove(a.id)
    assert [x.id for x in s.list()] == [b.id]
    with pytest.raises(NotFound):
        s.remove(a.id)


def test_two_claimers_never_both_run_one_due_schedule(home):
    from afinar.store.schedules import ScheduleRecord

    s = Schedules(get_database())
    rec = s.add(["improve", "--alias", "m"], 60)
    for _ in range(3):  # each round: eight workers race for the one due schedule
        wins: list = []
        start = threading.Barrier(8)

        def claim(i: int) -> None:
            start.wait()
            got = s.claim(f"w{i}", lease_s=30)
            if got is not None:
                wins.append((f"w{i}", got))

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1, wins
        worker, claimed = wins[0]
        assert s.get(rec.id).lease_owner == worker
        assert s.claim("late", lease_s=30) is None  # held: nobody else gets it
        assert s.take(rec.id, worker, 30) is None  # nor its holder twice
        assert s.finish(claimed, worker, 0, "ok")
        assert s.claim("next", lease_s=30) is None  # not due again for 60 s
        with s.db.session() as sess:  # make it due for the next round
            sess.get(ScheduleRecord, rec.id).next_run_at = time.time() - 1
    assert s.get(rec.id).runs == 3 and [r.exit_code for r in s.runs(rec.id)] == [0, 0, 0]


def test_an_expired_lease_is_claimed_again(home):
    s = Schedules(get_database())
    rec = s.add(["improve", "--alias", "m"], 60)
    dead = s.claim("dead", lease_s=0.2)
    assert dead is not None and s.claim("other", lease_s=30) is None
    time.sleep(0.3)
    got = s.claim("other", lease_s=30)
    assert got is not None and got.schedule.lease_owner == "other"
    assert not s.finish(dead, "dead", 0, "")  # the dead worker's late finish changes nothing
    assert s.get(rec.id).lease_owner == "other" and s.get(rec.id).runs == 0


def test_the_worker_runs_a_due_kb_sync_schedule(home, tmp_path, capsys, monkeypatch):
    from afinar.cli import common
    from afinar.rag.kb import KnowledgeBases
    from afinar.tuning.worker import run_worker

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "wifi.md").write_text("# Wi-Fi\n\nHold the reset button for ten seconds.\n")
    KnowledgeBases().create("support")
    code, out, err = run_cli(capsys, "schedule", "add", "--every", "1d", "--", "kb", "sync",
                             "support", str(docs))
    assert code == 0, err
    sid = out.split(":", 1)[0]
    bad = Schedules(get_database()).add(["kb", "sync", "nope", str(docs)], 3600)
    run_worker(exit_when_idle=True, poll_s=0.1, log=lambda m: None)
    s = Schedules(get_database())
    ok, failed = s.get(sid), s.get(bad.id)
    assert ok.runs == 1 and ok.last_status == 0 and ok.lease_owner is None
    assert ok.next_run_at > time.time() + 86000  # due again in a day
    run = s.runs(sid)[-1]
    assert run.exit_code == 0 and "added 1" in run.output
    assert [d.source.rsplit("/", 1)[-1] for d in KnowledgeBases().documents("support")] == \
        ["wifi.md"]
    assert failed.last_status == 2 and "no knowledge base 'nope'" in s.runs(bad.id)[-1].output
    monkeypatch.setattr(common.console, "width", 80)  # a small terminal
    code, out, _ = run_cli(capsys, "schedule", "list")
    assert code == 0 and sid in out and "exit 0" in out and "exit 2" in out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    code, out, _ = run_cli(capsys, "schedule", "remove", sid)
    assert code == 0 and [r.id for r in s.list()] == [bad.id]


@pytest.mark.parametrize("argv,message", [
    (["--every", "3x", "--", "kb", "sync", "a", "/tmp"], "not a duration"),
    (["--", "serve"], "cannot be scheduled"),
    (["--", "kb", "sync", "a"], "missing argument"),
    (["--", "kb", "sync", "a", "/tmp", "--bogus"], "no such option"),
    (["--", "kb", "watch", "a", "/tmp"], "needs --once"),
])
def test_cli_errors(home, capsys, argv, message):
    code, out, err = run_cli(capsys, "schedule", "add", *argv)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err.lower()
    code, _, err = run_cli(capsys, "schedule", "remove", "sched-nope")
    assert code == 2 and err.startswith("error: no schedule")
