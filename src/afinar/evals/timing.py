"""Latency measured on a quiet basis: one timed strategy at a time per machine, with the load
of everything else recorded.

Why: cost is a tie-breaker of the advisor's recommendation, so a latency taken while something
else ran (a second evaluation, a fine-tuning worker, a server answering requests) would decide
for the wrong reason. Two evaluations once showed the same model at p50 19.8 s and 2.1 s.

How:
- ``quiet(settings)`` holds an exclusive ``flock`` on ``$AFINAR_HOME/locks/measure.lock`` while a
  strategy warms up (loads its model and indexes: heavy work that would disturb another
  evaluation's timing) and then answers, timed from ``Load.begin()``: no two timed sections of evaluations in the same home
  overlap, whether they run in two processes or two threads (``flock`` locks belong to an open
  file description, and each section opens its own).
- While it is held, ``Load`` samples the CPU time that *other* processes used (``/proc/stat``
  total busy time minus this process's own), in cores, and notes any fine-tuning job that was
  running in the home. A section where others used more than ``BUSY_CORES`` on average is
  "under load": the report says so and the advisor does not break ties on its latency.

``/proc/stat`` exists on Linux only; elsewhere the other-process load is reported as unknown.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from afinar.settings import Settings
from afinar.tuning.jobs import Jobs

BUSY_CORES = 0.5  # other processes using more than this (in cores) on average: "under load"
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_ticks() -> int | None:
    """Busy CPU time of the whole machine in clock ticks (user+nice+system+irq+softirq+steal)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    v = [int(x) for x in first[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    return v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)


def _own_ticks() -> int:
    t = os.times()
    return round((t.user + t.system + t.children_user + t.children_system) * _TICK)


@dataclass
class Load:
    """What ran beside one timed section."""

    strategy: str
    started_at: float = 0.0  # wall clock (time.time), comparable across processes
    ended_at: float = 0.0
    waited_s: float = 0.0  # time spent waiting for another evaluation's timed section
    other_cores: float | None = None  # mean cores busy with other processes
    running_jobs: list[str] = field(default_factory=list)
    _t0: tuple = field(default=(), repr=False)

    @property
    def under_load(self) -> bool:
        return bool(self.running_jobs) or (self.other_cores is not None
                                           and self.other_cores > BUSY_CORES)

    def begin(self) -> None:
        """Timing starts here (after warm-up, which holds the lock but is not timed)."""
        self.started_at = time.time()
        self._t0 = (_busy_ticks(), _own_ticks(), time.perf_counter())

    def end(self) -> None:
        self.ended_at = time.time()
        busy1, own1, t1 = _busy_ticks(), _own_ticks(), time.perf_counter()
        busy0, own0, t0 = self._t0 or (None, 0, t1)
        if busy0 is not None and busy1 is not None and t1 > t0:
            other = max(0, (busy1 - busy0) - (own1 - own0)) / _TICK
            self.other_cores = other / (t1 - t0)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return {**d, "other_cores": None if self.other_cores is None
                else round(self.other_cores, 2), "under_load": self.under_load}


def _running_jobs(settings: Settings) -> list[str]:
    try:
        return [j.id for j in Jobs(settings).list(limit=100) if j.status == "running"]
    except Exception:  # an unreadable jobs table must not stop an evaluation; report nothing
        return []


@contextmanager
def quiet(settings: Settings, strategy: str) -> Iterator[Load]:
    """Hold the home's measurement lock for ``strategy``: the caller warms up, calls
    ``load.begin()``, answers; the section ends with the block. Yields its ``Load``."""
    lock_dir = settings.home / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    load = Load(strategy)
    w0 = time.perf_counter()
    with open(lock_dir / "measure.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            load.waited_s = round(time.perf_counter() - w0, 3)
            jobs = set(_running_jobs(settings))
            yield load
            if not load.started_at:
                load.begin()
            load.end()
            load.running_jobs = sorted(jobs | set(_running_jobs(settings)))
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def describe(loads: list[dict[str, Any]]) -> str:
    """One sentence for the report: how latency was measured and whether it can be trusted."""
    base = ("Latency: each strategy timed alone (no two evaluations' timed sections overlap in "
            "this home), model loaded before timing, retrieval included")
    busy = [x for x in loads if x.get("under_load")]
    known = [x["other_cores"] for x in loads if x.get("other_cores") is not None]
    if known:
        base += f"; other processes used {max(known):.2f} cores at most"
    if not busy:
        return base + "."
    why = []
    for x in busy:
        bits = []
        if x.get("other_cores") is not None and x["other_cores"] > BUSY_CORES:
            bits.append(f"{x['other_cores']:.1f} cores busy elsewhere")
        if x.get("running_jobs"):
            bits.append("fine-tuning " + ", ".join(x["running_jobs"]))
        why.append(f"{x['strategy']} ({'; '.join(bits)})")
    return (base + ". Measured under load, so latency is not used to break ties: "
            + ", ".join(why) + ".")
