"""Fine-tuning jobs as durable records: OpenAI's fields, statuses and events.

Statuses: validating_files -> queued -> running -> succeeded | failed | cancelled, plus paused.
Requests to cancel or pause a job a worker holds are written to ``requested``; the worker that
runs it acts on them between optimizer steps. Workers run outside the API process (``worker.py``),
on any number of hosts that share the database and the storage root.

Leases: a worker takes a job with ``claim`` (one guarded transaction: PostgreSQL's ``SELECT ...
FOR UPDATE SKIP LOCKED``, SQLite's ``BEGIN IMMEDIATE``; the ``UPDATE`` is also guarded by
``worker IS NULL`` and checked by its row count), which writes its name to ``worker`` (the lease
owner) and ``heartbeat_at`` (the lease's renewal). A job whose heartbeat is older than
``AFINAR_JOB_LEASE_S`` is released (``release_lost``) by the next reader or claimer, and taken by
another worker, which resumes from the last checkpoint. Every write a worker makes for its job
goes through ``Jobs.leased(...)``: each transaction first renews the lease with ``UPDATE jobs ...
WHERE id = ? AND worker = ?`` and raises ``LeaseLost`` when no row matches, so a worker that lost
its job cannot write to it, and the row stays locked until the write commits.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select, text, update

from afinar.errors import Conflict, InvalidRequest, NotFound
from afinar.ids import new_id
from afinar.models.catalog import Catalog
from afinar.settings import Settings, get_settings
from afinar.store.db import Database, get_database
from afinar.store.files import Files
from afinar.store.tables import CheckpointRecord, EventRecord, JobRecord
from afinar.tuning.hparams import parse_hyperparameters
from afinar.tuning.methods import get_method

ACTIVE = ("validating_files", "queued", "running", "paused")
TERMINAL = ("succeeded", "failed", "cancelled")
WAITING = ("validating_files", "queued")  # a worker may claim these (when no worker holds them)
ORG = "afinar"
DEFAULT_QUEUE = "default"
_SUFFIX = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_QUEUE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class LeaseLost(Exception):
    """A worker's write found its job leased to another worker (or to none): the job was taken
    as lost and may run elsewhere now. Not an ``AfinarError``: the job did not fail, this worker
    must stop without touching it."""


class LeasedDatabase:
    """The database as one worker's lease on one job sees it: every session begins with the
    guarded renewal ``UPDATE jobs SET heartbeat_at = now WHERE id = ? AND worker = ?`` and raises
    ``LeaseLost`` when no row matches, before anything else is written. That UPDATE also holds
    the job's row (PostgreSQL) or the write lock (SQLite) until the session commits, so no other
    worker can take the job over between the check and the writes."""

    def __init__(self, db: Database, job_id: str, worker: str):
        self.db, self.job_id, self.worker = db, job_id, worker

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        with self.db.session() as s:
            n = s.execute(update(JobRecord).where(
                JobRecord.id == self.job_id, JobRecord.worker == self.worker).values(
                heartbeat_at=int(time.time()))).rowcount
            if not n:
                raise LeaseLost(f"{self.job_id} is no longer leased to {self.worker}")
            yield s


def queue_name(queue: str | None, metadata: dict | None = None) -> str:
    """The queue a job waits in: ``queue``, else ``metadata["queue"]`` (the API's way, keeping
    OpenAI's request shape), else ``default``."""
    name = queue if queue is not None else (metadata or {}).get("queue", DEFAULT_QUEUE)
    if not isinstance(name, str) or not _QUEUE.match(name):
        raise InvalidRequest("a queue name is 1-64 letters, digits, '.', '-' or '_'",
                             param="queue" if queue is not None else "metadata.queue")
    return name


# What each kind of method trains on, as the message of a refusal shows it.
SCHEMAS = {
    "sft": ("chat rows {messages: [..., {role: assistant, content}]} or completion rows "
            "{prompt, completion}", ("chat", "completion")),
    "preference": ("preference rows {input: {messages}, preferred_output: [assistant message], "
                   "non_preferred_output: [assistant message]}", ("preference",)),
    "text": ("text rows {text}", ("text",)),
    "unpaired": ("unpaired rows {messages: [...], completion: the answer, label: true|false}",
                 ("unpaired",)),
    "prompt": ("reinforcement rows {messages: [..., {role: user, content}], other keys: the "
               "grader's item}", ("chat",)),
}
FORMAT_NAMES = {"chat": "a chat example", "completion": "a completion example",
                "preference": "a preference (DPO) row",
                "unpaired": "an unpaired (KTO) row", "text": "a text document"}


def first_format(path) -> tuple[int, str | None] | None:
    """(line, format) of the first row that parses as JSON, or None for a file without one."""
    from afinar.data.formats import detect
    from afinar.data.reader import Row, iter_rows

    for row in iter_rows(path):
        if isinstance(row, Row):
            fmt = detect(row.data)
            return row.line, "chat" if fmt == "evals" else fmt
    return None


def check_data(method: str, data_kind: str, train: tuple, val: tuple | None = None) -> None:
    """Refuse, before a job exists, data the method cannot train on, and a validation file with
    errors. ``train`` and ``val`` are (path, name shown) pairs. The training file's full check
    (with the model's tokenizer) is the job's, as with OpenAI; a file's format is read from its
    first row."""
    from afinar.data.validate import validate_file
    from afinar.tuning.samples import expected_format

    schema, accepted = SCHEMAS[data_kind]
    for param, pair in (("training_file", train), ("validation_file", val)):
        if not pair:
            continue
        found = first_format(pair[0])
        if found and found[1] and found[1] not in accepted:
            line, fmt = found
            raise InvalidRequest(f"method {method} expects {schema}; line {line} of {pair[1]} "
                                 f"is {FORMAT_NAMES.get(fmt, fmt)}", code=f"invalid_{param}",
                                 param=param)
    if val:
        r = validate_file(val[0], role="validation",
                          expected_format=expected_format(data_kind))
        if not r.ok:
            first = "; ".join(str(e) for e in r.errors[:3])
            raise InvalidRequest(f"{val[1]} is not a valid validation file ({r.n_errors} "
                                 f"errors): {first}", code="invalid_validation_file",
                                 param="validation_file")


def model_id_for(job: JobRecord) -> str:
    return f"ft:{job.model}:{ORG}:{job.suffix or ''}:{job.id[-8:]}"


class Jobs:
    """Jobs in the database. ``Jobs(...).leased(job_id, worker)`` is the view a worker writes
    through: its ``db`` and its ``update``/``event`` for that job are guarded by the lease (see
    ``LeasedDatabase``); reads are not."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.store = get_database(self.settings.db_url)  # unguarded: reads, readers' writes
        self.db: Database | LeasedDatabase = self.store
        self.lease: tuple[str, str] | None = None

    def leased(self, job_id: str, worker: str) -> Jobs:
        view = Jobs(self.settings)
        view.lease, view.db = (job_id, worker), LeasedDatabase(self.store, job_id, worker)
        return view

    def _writer(self, job_id: str):
        return self.db if self.lease and self.lease[0] == job_id else self.store

    # -- create and read ------------------------------------------------------------------
    def create(self, *, model: str, training_file: str, validation_file: str | None = None,
               method: dict[str, Any] | None = None, hyperparameters: dict[str, Any] | None = None,
               suffix: str | None = None, seed: int | None = None,
               metadata: dict[str, str] | None = None, val_split: float | None = None,
               owner: dict[str, Any] | None = None, queue: str | None = None,
               processes: int | None = None) -> JobRecord:
        """A queued job. ``owner``: the record's project and creator columns (``project_id``,
        ``owner_key_id``, ``owner_groups``), written with the job so no worker or reader ever
        sees it without them. ``queue`` (else ``metadata["queue"]``, else ``default``): only
        workers serving that queue take it (``afinar worker --queue NAME``). ``processes``: train
        on that many processes (``tuning/distributed.py``; one GPU each on CUDA)."""
        queue = queue_name(queue, metadata)
        if processes is not None and not 1 <= processes <= 64:
            raise InvalidRequest("processes must be 1-64", param="processes")
        base = Catalog(self.settings).get(model)
        if base.kind != "chat":
            raise InvalidRequest(f"{model} is not a chat model", param="model")
        files = Files(self.settings)
        files.get(training_file)
        if validation_file:
            files.get(validation_file)
        if suffix is not None and not _SUFFIX.match(suffix):
            raise InvalidRequest("suffix must be 1-64 letters, digits, '-' or '_'", param="suffix")
        method = dict(method or {"type": "lora"})
        mtype = method.get("type", "lora")
        kind = get_method(mtype, method.get(mtype)).data_kind  # checks the name and options now
        check_data(mtype, kind, (files.path(training_file), files.get(training_file).filename),
                   (files.path(validation_file), files.get(validation_file).filename)
                   if validation_file else None)
        hp = parse_hyperparameters(hyperparameters)
        if val_split is not None and not 0 < val_split < 0.5:
            raise InvalidRequest("val_split must be in (0, 0.5)", param="val_split")
        if seed is None:
            import secrets

            seed = secrets.randbelow(2**31)
        job = JobRecord(
            id=new_id("ftjob-"), model=model, training_file=training_file,
            validation_file=validation_file, status="validating_files",
            method={"type": mtype, mtype: method.get(mtype) or {}},
            hyperparameters=hp.model_dump(), seed=seed, suffix=suffix, result_files=[],
            metadata_=metadata, created_at=int(time.time()), queue=queue,
            info={k: v for k, v in (("val_split", val_split), ("processes", processes)) if v},
            **(owner or {}),
        )
        with self.store.session() as s:
            s.add(job)
        self.event(job.id, "info", "message", f"Created fine-tuning job: {job.id}")
        return job

    def get(self, job_id: str) -> JobRecord:
        with self.store.session() as s:
            job = s.get(JobRecord, job_id)
        if job is None:
            raise NotFound(f"no fine-tuning job {job_id!r}", param="fine_tuning_job_id")
        return self._leased([job])[0]

    def list(self, after: str | None = None, limit: int = 20) -> list[JobRecord]:
        q = select(JobRecord).order_by(JobRecord.created_at.desc(), JobRecord.id.desc())
        with self.store.session() as s:
            if after:
                ref = s.get(JobRecord, after)
                if ref is not None:
                    q = q.where((JobRecord.created_at < ref.created_at) | (
                        (JobRecord.created_at == ref.created_at) & (JobRecord.id < ref.id)))
            found = list(s.scalars(q.limit(limit)))
        return self._leased(found)

    # -- leases: a worker proves it is alive by its heartbeat ------------------------------
    def expired(self, job: JobRecord, now: float | None = None) -> bool:
        """A job held by a worker (``running``, or claimed and still validating or queued)
        whose heartbeat is older than the lease (``AFINAR_JOB_LEASE_S``)."""
        held = job.status == "running" or (job.worker is not None and job.status in WAITING)
        now = time.time() if now is None else now
        return held and (job.heartbeat_at is None
                         or now - job.heartbeat_at > self.settings.job_lease_s)

    def _leased(self, jobs: list[JobRecord]) -> list[JobRecord]:
        """The jobs as they stand once every held one whose lease has expired has been released
        as lost, so that a read never reports a dead worker's job as ``running``."""
        lease, now = self.settings.job_lease_s, time.time()
        out = []
        for job in jobs:
            if self.expired(job, now):
                seen = f"{now - job.heartbeat_at:.0f} s" if job.heartbeat_at else "ever"
                self.release_lost(job, f"no heartbeat for {seen} (lease {lease:g} s)")
                with self.store.session() as s:
                    job = s.get(JobRecord, job.id) or job
            out.append(job)
        return out

    def held(self) -> list[JobRecord]:
        """Jobs a worker holds (or held, if it died): running, or claimed and not yet running."""
        with self.store.session() as s:
            return list(s.scalars(select(JobRecord).where(
                (JobRecord.status == "running")
                | (JobRecord.worker.is_not(None) & JobRecord.status.in_(WAITING)))))

    def release_expired(self) -> list[str]:
        """Release every job whose lease has expired (what ``claim`` does first)."""
        return [j.id for j in self._leased(self.held()) if j.status != "running"
                and j.worker is None]

    def release_lost(self, job: JobRecord, why: str) -> bool:
        """A job whose worker is gone goes back to ``queued`` for the next worker (which
        resumes from its last checkpoint), or to ``failed`` once ``AFINAR_JOB_MAX_ATTEMPTS``
        workers have been lost on it. Only if it is still as ``job`` shows it (same status,
        worker and heartbeat): a worker that is alive after all (its renewal changed the
        heartbeat), or another reader releasing it at the same moment, wins. True if this call
        released it."""
        lost = int((job.info or {}).get("lost_workers", 0)) + 1
        limit = self.settings.job_max_attempts
        values: dict[str, Any] = {"worker": None, "info": {**(job.info or {}),
                                                          "lost_workers": lost}}
        if lost >= limit:
            msg = (f"The job's worker was lost {lost} time(s) (last: {why}); it is not retried "
                   f"after {limit} (AFINAR_JOB_MAX_ATTEMPTS)")
            values.update(status="failed", finished_at=int(time.time()), requested=None,
                          error={"code": "worker_lost", "message": msg, "param": None})
        else:
            msg = (f"The worker running this job stopped ({why}); queued again: the next "
                   "worker resumes from its last checkpoint")
            values.update(status="queued" if job.status == "running" else job.status)
        same = [JobRecord.id == job.id, JobRecord.status == job.status,
                JobRecord.worker.is_(None) if job.worker is None
                else JobRecord.worker == job.worker,
                JobRecord.heartbeat_at.is_(None) if job.heartbeat_at is None
                else JobRecord.heartbeat_at == job.heartbeat_at]
        with self.store.session() as s:
            n = s.execute(update(JobRecord).where(*same).values(**values)).rowcount
        if n:
            self.event(job.id, "error" if lost >= limit else "warn", "message", msg,
                       guarded=False)
        return bool(n)

    def events(self, job_id: str, after_seq: int = 0, limit: int | None = None
               ) -> list[EventRecord]:
        self.get(job_id)
        q = select(EventRecord).where(EventRecord.job_id == job_id, EventRecord.seq > after_seq
                                      ).order_by(EventRecord.seq)
        with self.store.session() as s:
            return list(s.scalars(q.limit(limit) if limit else q))

    def checkpoints(self, job_id: str) -> list[CheckpointRecord]:
        self.get(job_id)
        with self.store.session() as s:
            return list(s.scalars(select(CheckpointRecord).where(
                CheckpointRecord.job_id == job_id).order_by(CheckpointRecord.step_number.desc())))

    # -- control --------------------------------------------------------------------------
    def cancel(self, job_id: str) -> JobRecord:
        job = self.get(job_id)
        if job.status in TERMINAL:
            raise Conflict(f"job {job_id} already {job.status}", param="fine_tuning_job_id")
        if job.status == "running" or job.worker is not None:  # its worker acts on it
            self.update(job_id, requested="cancel")
            self.event(job_id, "info", "message", "Cancellation requested")
        else:
            self.update(job_id, status="cancelled", finished_at=int(time.time()))
            self.event(job_id, "info", "message", "Job cancelled")
        return self.get(job_id)

    def pause(self, job_id: str) -> JobRecord:
        job = self.get(job_id)
        if job.status not in ("running", "queued", "validating_files"):
            raise Conflict(f"job {job_id} is {job.status}; only an active job can be paused",
                           param="fine_tuning_job_id")
        if job.status == "running" or job.worker is not None:
            self.update(job_id, requested="pause")
            self.event(job_id, "info", "message", "Pause requested")
        else:
            self.update(job_id, status="paused", requested=None)
            self.event(job_id, "info", "message", "Job paused")
        return self.get(job_id)

    def resume(self, job_id: str) -> JobRecord:
        job = self.get(job_id)
        if job.status != "paused":
            raise Conflict(f"job {job_id} is {job.status}, not paused", param="fine_tuning_job_id")
        self.update(job_id, status="queued", requested=None)
        self.event(job_id, "info", "message", "Job resumed; queued")
        return self.get(job_id)

    # -- used by the worker ---------------------------------------------------------------
    def event(self, job_id: str, level: str, type_: str, message: str,
              data: dict | None = None, *, guarded: bool = True) -> None:
        """Append an event; through a leased view, only while the lease holds (``guarded``
        False: a worker's note that it lost the job, which must be written all the same)."""
        db = self._writer(job_id) if guarded else self.store
        with db.session() as s:
            s.add(EventRecord(id=new_id("ftevent-"), job_id=job_id, created_at=int(time.time()),
                              level=level, type=type_, message=message[:4096], data=data))

    def update(self, job_id: str, **values: Any) -> None:
        """Set columns of a job; through a leased view, only while the lease holds (else
        ``LeaseLost``). A leased write that sets ``worker`` to None ends the lease (the job is
        then finished or paused, which no worker claims): the view's later writes, the closing
        events, are no longer guarded."""
        with self._writer(job_id).session() as s:
            s.execute(update(JobRecord).where(JobRecord.id == job_id).values(**values))
        if self.lease and self.lease[0] == job_id and "worker" in values \
                and values["worker"] is None:
            self.lease, self.db = None, self.store

    def claim(self, worker: str, queues: tuple[str, ...] = (DEFAULT_QUEUE,)
              ) -> JobRecord | None:
        """Take the oldest job waiting in one of ``queues`` that no worker holds, first
        releasing the jobs whose lease has expired; None when none waits. Two workers never
        both win: PostgreSQL locks the chosen row (``FOR UPDATE SKIP LOCKED``: a concurrent
        claimer takes the next one instead of waiting), SQLite runs the claim under
        ``BEGIN IMMEDIATE`` (one writer at a time), and on both the ``UPDATE`` repeats the
        conditions and its row count says whether this worker got the job."""
        self.release_expired()
        waiting = (JobRecord.status.in_(WAITING), JobRecord.worker.is_(None))
        for _ in range(5):  # a lost race (PostgreSQL only) moves on to the next job
            with self.store.session() as s:
                dialect = s.get_bind().dialect.name
                if dialect == "sqlite":
                    s.execute(text("BEGIN IMMEDIATE"))
                q = select(JobRecord.id).where(*waiting, JobRecord.queue.in_(list(queues))
                                               ).order_by(JobRecord.created_at, JobRecord.id
                                                          ).limit(1)
                if dialect == "postgresql":
                    q = q.with_for_update(skip_locked=True)
                job_id = s.scalar(q)
                if job_id is None:
                    return None
                if job := self._take(s, job_id, worker):
                    return job
        return None

    def take(self, job_id: str, worker: str) -> JobRecord | None:
        """Claim one given job (a job run directly, not through ``claim``); None when it is not
        waiting or another worker holds it."""
        with self.store.session() as s:
            return self._take(s, job_id, worker)

    @staticmethod
    def _take(s, job_id: str, worker: str) -> JobRecord | None:
        n = s.execute(update(JobRecord).where(
            JobRecord.id == job_id, JobRecord.status.in_(WAITING),
            JobRecord.worker.is_(None)).values(worker=worker,
                                                heartbeat_at=int(time.time()))).rowcount
        return s.get(JobRecord, job_id, populate_existing=True) if n else None
