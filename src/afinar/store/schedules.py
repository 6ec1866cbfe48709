"""Schedules: afinar commands a worker runs every N seconds, or once (``afinar schedule``).

A schedule is an argument list of an afinar command (only the commands in ``SCHEDULABLE``:
keeping a knowledge base in sync, the improvement loop), its period
(``every_s``; ``None``: run once) and the time it is next due. Workers run due schedules between
jobs (``afinar.tuning.worker``), each as a subprocess ``python -m afinar ARGV...``, so the
worker imports nothing of the commands it runs.

Two workers never run the same due schedule: ``claim`` takes it in one guarded ``UPDATE``
(``WHERE id = ? AND next_run_at <= now AND (lease_owner IS NULL OR lease_until < now)``,
checked by its row count; SQLite under ``BEGIN IMMEDIATE``, as ``Jobs.claim``), writing the
worker's name and a lease; the worker renews the lease while the command runs (``renew``) and
``finish`` records the run (exit status, the output's tail) and the next due time, guarded by
the same lease. A worker that dies leaves a lease that expires, and the next claimer runs it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, select, text, update
from sqlalchemy.orm import Mapped, mapped_column

from afinar.errors import InvalidRequest, NotFound
from afinar.ids import new_id
from afinar.store.db import Database
from afinar.store.tables import Base

# the command prefixes a schedule may run, and the flags each must carry
SCHEDULABLE: dict[tuple[str, ...], tuple[str, ...]] = {
    ("kb", "sync"): (),
    ("kb", "watch"): ("--once",),
    ("improve",): (),
    ("monitor",): (),
}
MAX_OUTPUT = 64 * 1024  # characters of a run's output kept (its tail)
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ScheduleRecord(Base):
    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    argv: Mapped[list[str]] = mapped_column(JSON)
    every_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: once
    project_id: Mapped[str] = mapped_column(String(64), default="default")
    owner_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    next_run_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(256), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    last_run_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ScheduleRun(Base):
    __tablename__ = "schedule_runs"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule_id: Mapped[str] = mapped_column(String(64), index=True)
    worker: Mapped[str] = mapped_column(String(256))
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output: Mapped[str | None] = mapped_column(String, nullable=True)


@dataclass
class Claimed:
    """A schedule this worker holds, and its run's record."""

    schedule: ScheduleRecord
    run_seq: int


def parse_duration(value: str, param: str = "every", minimum: float = 1.0) -> float:
    """``30s``, ``5m``, ``1h``, ``1d`` (``0.5s``) -> seconds, at least ``minimum``."""
    m = _EVERY.match(str(value))
    if not m:
        raise InvalidRequest(f"{param} {value!r} is not a duration such as 30s, 5m, 1h or 1d",
                             param=param.lstrip("-"))
    seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if seconds < minimum:
        raise InvalidRequest(f"{param} {value!r} is under {minimum:g} seconds",
                             param=param.lstrip("-"))
    return seconds


def check_argv(argv: list[str]) -> list[str]:
    """The argument list of a schedulable afinar command, or one ``InvalidRequest``."""
    if not isinstance(argv, list) or not all(isinstance(a, str) and a for a in argv):
        raise InvalidRequest("a schedule's command is a list of non-empty strings", param="argv")
    argv = [a for a in argv]
    if argv[:1] == ["afinar"]:
        argv = argv[1:]
    for prefix, flags in SCHEDULABLE.items():
        if tuple(argv[:len(prefix)]) == prefix:
            missing = [f for f in flags if f not in argv]
            if missing:
                raise InvalidRequest(f"a scheduled '{' '.join(prefix)}' needs "
                                     f"{' '.join(missing)}", param="argv")
            return argv
    known = ", ".join(" ".join(p) + "".join(" " + f for f in fl) for p, fl in SCHEDULABLE.items())
    raise InvalidRequest(f"'{' '.join(argv) or '(nothing)'}' cannot be scheduled; schedulable "
                         f"commands: {known}", param="argv")


class Schedules:
    """The schedules of one database."""

    def __init__(self, db: Database):
        self.db = db

    def add(self, argv: list[str], every_s: float | None, owner: dict[str, Any] | None = None,
            first_at: float | None = None) -> ScheduleRecord:
        """A schedule of ``argv`` every ``every_s`` seconds (``None``: once), first due at
        ``first_at`` (default now). ``owner``: its ``project_id`` and ``owner_key_id``."""
        argv = check_argv(argv)
        if every_s is not None and not every_s >= 1:
            raise InvalidRequest("every must be at least one second", param="every")
        now = time.time()
        rec = ScheduleRecord(id=new_id("sched-", 12), argv=argv, every_s=every_s,
                             created_at=now, next_run_at=now if first_at is None else first_at,
                             runs=0, info={}, **{"project_id": "default", **(owner or {})})
        with self.db.session() as s:
            s.add(rec)
        return rec

    def get(self, schedule_id: str) -> ScheduleRecord:
        with self.db.session() as s:
            rec = s.get(ScheduleRecord, schedule_id)
        if rec is None:
            raise NotFound(f"no schedule {schedule_id!r}", param="schedule_id")
        return rec

    def list(self) -> list[ScheduleRecord]:
        with self.db.session() as s:
            return list(s.scalars(select(ScheduleRecord).order_by(ScheduleRecord.created_at,
                                                                  ScheduleRecord.id)))

    def remove(self, schedule_id: str) -> None:
        with self.db.session() as s:
            rec = s.get(ScheduleRecord, schedule_id)
            if rec is None:
                raise NotFound(f"no schedule {schedule_id!r}", param="schedule_id")
            s.delete(rec)

    def runs(self, schedule_id: str) -> list[ScheduleRun]:
        with self.db.session() as s:
            return list(s.scalars(select(ScheduleRun).where(
                ScheduleRun.schedule_id == schedule_id).order_by(ScheduleRun.seq)))

    def due(self, now: float | None = None) -> list[str]:
        """Ids of the schedules due now that no live lease holds, oldest due first."""
        now = time.time() if now is None else now
        with self.db.session() as s:
            return list(s.scalars(select(ScheduleRecord.id).where(*_free(now)).order_by(
                ScheduleRecord.next_run_at, ScheduleRecord.id)))

    def claim(self, worker: str, lease_s: float, now: float | None = None) -> Claimed | None:
        """Take the schedule due longest that no live lease holds (None when none is due):
        one guarded ``UPDATE`` whose row count says whether this worker got it."""
        for schedule_id in self.due(now)[:5]:
            got = self.take(schedule_id, worker, lease_s, now)
            if got is not None:
                return got
        return None

    def take(self, schedule_id: str, worker: str, lease_s: float,
             now: float | None = None) -> Claimed | None:
        now = time.time() if now is None else now
        with self.db.session() as s:
            if s.get_bind().dialect.name == "sqlite":
                s.execute(text("BEGIN IMMEDIATE"))
            n = s.execute(update(ScheduleRecord).where(
                ScheduleRecord.id == schedule_id, *_free(now)).values(
                lease_owner=worker, lease_until=now + lease_s)).rowcount
            if not n:
                return None
            run = ScheduleRun(schedule_id=schedule_id, worker=worker, started_at=now)
            s.add(run)
            s.flush()
            return Claimed(s.get(ScheduleRecord, schedule_id, populate_existing=True), run.seq)

    def renew(self, claimed: Claimed, worker: str, lease_s: float) -> bool:
        """Extend this worker's lease; False when it lost it."""
        with self.db.session() as s:
            return bool(s.execute(update(ScheduleRecord).where(
                ScheduleRecord.id == claimed.schedule.id,
                ScheduleRecord.lease_owner == worker).values(
                lease_until=time.time() + lease_s)).rowcount)

    def release(self, claimed: Claimed, worker: str) -> None:
        """Hand the schedule back unrun (the worker is stopping): due again at once."""
        with self.db.session() as s:
            s.execute(update(ScheduleRecord).where(
                ScheduleRecord.id == claimed.schedule.id,
                ScheduleRecord.lease_owner == worker).values(lease_owner=None, lease_until=None))

    def finish(self, claimed: Claimed, worker: str, exit_code: int, output: str) -> bool:
        """Record the run and make the schedule due again after its period (a one-shot one is
        done: never due again); guarded by the lease (False when this worker lost it: the run
        is recorded, the schedule left to its new holder)."""
        now = time.time()
        rec = claimed.schedule
        nxt = None
        if rec.every_s is not None:
            nxt = (rec.next_run_at or now) + rec.every_s
            if nxt <= now:  # missed periods are not run twice
                nxt = now + rec.every_s
        with self.db.session() as s:
            run = s.get(ScheduleRun, claimed.run_seq)
            if run is not None:
                run.finished_at, run.exit_code = now, int(exit_code)
                run.output = output[-MAX_OUTPUT:]
            return bool(s.execute(update(ScheduleRecord).where(
                ScheduleRecord.id == rec.id, ScheduleRecord.lease_owner == worker).values(
                lease_owner=None, lease_until=None, next_run_at=nxt, last_run_at=now,
                last_status=int(exit_code), runs=ScheduleRecord.runs + 1)).rowcount)


def _free(now: float):
    return (ScheduleRecord.next_run_at.is_not(None), ScheduleRecord.next_run_at <= now,
            (ScheduleRecord.lease_owner.is_(None)) | (ScheduleRecord.lease_until < now))
