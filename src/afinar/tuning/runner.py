"""Run one fine-tuning job: validate its files, resolve hyperparameters, train, checkpoint,
promote the best checkpoint, write the model, its manifest and the metrics CSV.

Called by a worker process. Every exit leaves the job in a state that says what happened:
succeeded, failed (with an error code), cancelled, paused (resumable), or - if the process dies -
running with no worker holding the lock, which the next worker resumes from the last checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import delete, select, update

from afinar.errors import AfinarError, NotFound
from afinar.ids import new_id
from afinar.models.catalog import Catalog
from afinar.models.finetuned import MANIFEST
from afinar.models.templates import template_fingerprint
from afinar.models.training import open_training_base
from afinar.settings import Settings
from afinar.store.atomic import atomic_dir, atomic_write_text
from afinar.store.blobs import sha256_file
from afinar.store.files import Files
from afinar.store.tables import CheckpointRecord, JobRecord, ModelRecord
from afinar.tuning.hparams import Hyperparameters, convergence_note, few_steps_note, resolve
from afinar.tuning.jobs import Jobs, LeaseLost, model_id_for
from afinar.tuning.distributed import Collective, launch
from afinar.tuning.methods import BuildContext, get_method
from afinar.tuning.samples import load_samples
from afinar.tuning.trainer import Trainer, TrainState


class Heartbeat:
    """The worker's proof of life: the job's ``heartbeat_at``, written every
    ``AFINAR_JOB_HEARTBEAT_S`` (at most a third of the lease) from a thread of its own, so that
    loading a model, checking data or one long optimizer step never looks like a dead worker.
    It writes only while this worker holds the job; a reader that finds the heartbeat older than
    the lease releases the job (``Jobs.release_lost``)."""

    def __init__(self, jobs: Jobs, job_id: str, worker: str):
        st = jobs.settings
        self.jobs, self.job_id, self.worker = jobs, job_id, worker
        self.every = min(st.job_heartbeat_s, st.job_lease_s / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="afinar-heartbeat")

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def beat(self) -> None:
        with self.jobs.db.session() as s:
            s.execute(update(JobRecord).where(JobRecord.id == self.job_id,
                                              JobRecord.worker == self.worker).values(
                heartbeat_at=int(time.time())))

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a busy database now and then; beat again later
                pass


class _ReadOnly:
    """The jobs service as a rank other than 0 sees it: it reads, and writes nothing (rank 0
    writes the events, states and models of every rank)."""

    def __init__(self, jobs: Jobs):
        self._jobs = jobs

    def __getattr__(self, name):
        return getattr(self._jobs, name)

    def update(self, *a, **k) -> None:
        pass

    def event(self, *a, **k) -> None:
        pass


RANK_RESTARTS = 2  # a multi-process job whose ranks die is restarted this often, then fails


class JobRunner:
    def __init__(self, job: JobRecord, settings: Settings, worker: str,
                 dist: Collective | None = None):
        """``dist``: this process is one rank of a multi-process job (``tuning/rank.py``)."""
        self.job, self.settings, self.worker, self.dist = job, settings, worker, dist
        self.main = dist is None or dist.main
        self.jobs = Jobs(settings).leased(job.id, worker)  # every write checks the lease
        if not self.main:
            self.jobs = _ReadOnly(self.jobs)
        self.dir = settings.home / "jobs" / job.id
        self._pace: tuple[float, int] | None = None  # (time, step) of the first reported step

    def event(self, level: str, type_: str, message: str, data: dict | None = None) -> None:
        self.jobs.event(self.job.id, level, type_, message, data)
        if type_ == "metrics" and data and data.get("total_steps"):
            # estimated_finish from this run's pace (steps since start or resume)
            now = time.time()
            self._pace = self._pace or (now, data["step"])
            t0, s0 = self._pace
            done = data["step"] - s0
            if done > 0:
                left = (data["total_steps"] - data["step"]) * (now - t0) / done
                self.jobs.update(self.job.id, estimated_finish=int(now + left))

    def run(self) -> str:
        if self.dist is not None:
            return self._run_rank()
        if self.job.worker != self.worker:  # run directly, not claimed: take the job first
            taken = self.jobs.take(self.job.id, self.worker)
            if taken is None:
                return "lost"  # not waiting, or another worker holds it
            self.job = taken
        try:
            try:
                with Heartbeat(self.jobs, self.job.id, self.worker):
                    n = int(self.job.info.get("processes") or 1)
                    return self._run_ranks(n) if n > 1 else self._run()
            except LeaseLost:
                raise
            except AfinarError as e:
                self._fail(e.code, e.message, e.param)
            except Exception as e:  # noqa: BLE001 - any crash must end "failed", never "running"
                self._fail("training_error", f"{type(e).__name__}: {e}", None)
            return "failed"
        except LeaseLost:  # a write found the job another worker's: leave it as it is
            self.jobs.event(self.job.id, "warn", "message", f"Worker {self.worker} lost this "
                            "job (its lease was taken over) and stopped", guarded=False)
            return "lost"

    def _run_ranks(self, n: int) -> str:
        """The worker's side of a multi-process job: start the ranks, wait, and restart them
        from the last checkpoint when one died (the job still running under this worker)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        log = self.dir / "ranks.log"
        for attempt in range(RANK_RESTARTS + 1):
            rc = launch(self.job.id, self.worker, n, log, self.settings.effective_threads)
            job = self.jobs.get(self.job.id)
            if job.status in ("succeeded", "failed", "cancelled", "paused"):
                return job.status
            if job.worker != self.worker:
                return "lost"
            if attempt < RANK_RESTARTS:
                self.event("warn", "message", f"A training process died (launcher exit status "
                           f"{rc}); restarting the {n} processes from the last checkpoint")
        self._fail("training_error", f"the {n} training processes died {RANK_RESTARTS + 1} "
                   f"times (last exit status {rc}); their output is in {log}", None)
        return "failed"

    def _run_rank(self) -> str:
        """One rank (``tuning/rank.py``): the launching worker holds the job and its heartbeat.
        A job error (bad data, a bad option: the same on every rank) fails the job; any other
        exception (a peer died mid-collective, the process is being stopped) leaves it to the
        worker, which restarts the ranks."""
        try:
            return self._run()
        except LeaseLost:
            return "lost"
        except AfinarError as e:
            self._fail(e.code, e.message, e.param)
            return "failed"

    def _fail(self, code: str, message: str, param: str | None) -> None:
        self.jobs.update(self.job.id, status="failed", finished_at=int(time.time()), worker=None,
                       error={"code": code, "message": message, "param": param})
        self.event("error", "message", f"Job failed: {message}")

    # -- the job --------------------------------------------------------------------------
    def _run(self) -> str:
        job, s = self.job, self.settings
        info = Catalog(s).get(job.model)
        mtype = job.method["type"]
        method = get_method(mtype, job.method.get(mtype))
        base = open_training_base(info, s, check_device=method.check_device)
        if job.status == "validating_files":
            self.event("info", "message", "Validating training file: " + job.training_file)
        tok, device = base.tokenizer, base.device
        hp_in = Hyperparameters(**job.hyperparameters)
        max_len = hp_in.max_seq_len or min(info.context_length or 2048, 2048)
        files = Files(s)
        train, report = load_samples(files.path(job.training_file), tok, method.data_kind,
                                     max_len, "training_file",
                                     files.get(job.training_file).filename)
        warnings = [("Training file", report)]
        val = None
        if job.validation_file:
            val, vreport = load_samples(files.path(job.validation_file), tok, method.data_kind,
                                        max_len, "validation_file",
                                        files.get(job.validation_file).filename, role="validation")
            warnings.append(("Validation file", vreport))
        elif job.info.get("val_split"):
            order = list(range(len(train)))
            random.Random(f"afinar-split:{job.seed}").shuffle(order)
            k = max(1, int(len(train) * job.info["val_split"]))
            val = [train[i] for i in order[:k]]
            train = [train[i] for i in order[k:]]
        hp = resolve(hp_in, len(train), method.base_lr, info.context_length or 2048,
                     objective=method.objective_class().hyperparameters)
        if (u := method.updates_per_batch) > 1:  # each batch trained on u steps in a row
            hp = hp.model_copy(update={"steps_per_epoch": hp.steps_per_epoch * u,
                                       "total_steps": hp.total_steps * u})
        if job.status == "validating_files":
            self.jobs.update(job.id, status="queued")
            self.event("info", "message", f"Files validated: {len(train)} training examples"
                       + (f", {len(val)} validation examples" if val else ""))
            for what, r in warnings:
                for line in r.warning_lines():
                    self.event("warn", "message", f"{what}: {line}")
        if not val:
            self.event("warn", "message", "No validation data: overfitting will be invisible "
                       "(pass a validation file or --val-split 0.1)")
        if note := few_steps_note(hp):
            self.event("warn", "message", note)
        self.jobs.update(job.id, status="running", worker=self.worker,
                         heartbeat_at=int(time.time()),
                         started_at=job.started_at or int(time.time()),
                         hyperparameters={**hp_in.model_dump(), "resolved": hp.model_dump()})
        self.event("info", "message", "Hyperparameters: " + ", ".join(
            f"{k}={v}" for k, v in hp.model_dump().items() if v is not None))

        torch.manual_seed(job.seed)
        model = method.build(base.load_model(**method.load_kwargs(device)),
                             BuildContext(base.folder, tok, device))
        trainer = Trainer(model, method, tok, train, val, hp, job.seed, device, self.event,
                          self._control, lambda st, row: self._checkpoint(trainer, st, row),
                          dist=self.dist or Collective())
        st = TrainState()
        snap = self._latest_state()
        if snap is not None:
            st = trainer.load_state_dict(torch.load(snap, weights_only=False))
            self._reregister(snap, method)
            self.event("info", "message", f"Resumed from step {st.step} ({snap.parent.name})")
        else:
            self.event("info", "message", "Fine-tuning started")
        t0 = time.time()
        st = trainer.run(st)
        if st.stop_reason == "lost":  # the job is another worker's now; leave it as it is
            self.jobs.event(job.id, "warn", "message", f"Worker {self.worker} lost this job at "
                            f"step {st.step} (its heartbeat was older than the lease) and "
                            "stopped", guarded=False)
            return "lost"
        if st.stop_reason == "cancel":
            self.jobs.update(job.id, status="cancelled", finished_at=int(time.time()),
                           worker=None, requested=None)
            self.event("info", "message", "Job cancelled")
            return "cancelled"
        if st.stop_reason == "pause":
            if self.main:
                self._save_state(trainer, st, self.dir / "resume")
            self.jobs.update(job.id, status="paused", worker=None, requested=None)
            self.event("info", "message", f"Job paused at step {st.step}")
            return "paused"
        if st.stop_reason is None and (note := convergence_note(
                [r["train_loss"] for r in st.history])):
            self.event("warn", "message", note)
        if self.main:
            self._finish(trainer, st, method, info, tok, hp, time.time() - t0)
        return "succeeded"

    # -- control, checkpoints -------------------------------------------------------------
    def _control(self) -> str | None:
        if not self.main:  # rank 0's signal is every rank's (Collective.agree)
            return None
        job = self.jobs.get(self.job.id)
        if job.worker != self.worker:  # released as lost (no heartbeat within the lease)
            return "lost"
        return job.requested

    @staticmethod
    def _write_state(folder: Path, trainer: Trainer, st: TrainState) -> None:
        """The full training state, and its step in a small file so that choosing where to
        resume never loads a state (gigabytes for a full fine-tune) just to read its step."""
        torch.save(trainer.state_dict(st), folder / "state.pt")
        (folder / "step.json").write_text(json.dumps({"step": st.step}))

    def _save_state(self, trainer: Trainer, st: TrainState, where: Path) -> None:
        with atomic_dir(where) as tmp:
            self._write_state(tmp, trainer, st)

    def _latest_state(self) -> Path | None:
        found = [*(self.dir / "checkpoints").glob("step-*/step.json"),
                 *(self.dir / "resume").glob("step.json")]
        if not found:
            return None
        latest = max(found, key=lambda p: json.loads(p.read_text())["step"])
        return latest.with_name("state.pt")

    def _checkpoint(self, trainer: Trainer, st: TrainState, row: dict) -> str:
        job = self.job
        where = self.dir / "checkpoints" / f"step-{st.step}"
        ckpt_model = f"{model_id_for(job)}:ckpt-step-{st.step}"
        if not self.main:
            return ckpt_model
        if st.best and st.best["step"] == st.step:  # this checkpoint is the new best
            st.best.update(checkpoint=ckpt_model, path=str(where / "model"))
        with atomic_dir(where) as tmp:
            trainer.method.save(trainer.model, tmp / "model", trainer.tok)
            self._write_state(tmp, trainer, st)
            self._write_manifest(tmp / "model", trainer, row, step=st.step)
        self._register_checkpoint(where, st.step, row, trainer.method)
        self.event("info", "message", f"Checkpoint saved at step {st.step}: {ckpt_model}")
        self._prune(st)
        return ckpt_model

    def _register_checkpoint(self, where: Path, step: int, row: dict | None, method) -> None:
        job = self.job
        ckpt_model = f"{model_id_for(job)}:ckpt-step-{step}"
        with self.jobs.db.session() as s:
            s.merge(CheckpointRecord(id=f"ftckpt-{job.id[-12:]}{step}", job_id=job.id,
                                     step_number=step, model_id=ckpt_model,
                                     path=str(where / "model"), metrics=_ckpt_metrics(row or {}),
                                     created_at=int(time.time())))
            s.merge(self._model_record(ckpt_model, where / "model", method))

    def _reregister(self, snap: Path, method) -> None:
        """A worker killed between writing a checkpoint and recording it leaves a folder the
        database does not know: record it again before resuming from it."""
        if snap.parent.parent != self.dir / "checkpoints" or not self.main:
            return
        step = json.loads((snap.parent / "step.json").read_text())["step"]
        with self.jobs.db.session() as s:
            known = s.scalar(select(CheckpointRecord.id).where(
                CheckpointRecord.job_id == self.job.id, CheckpointRecord.step_number == step))
        if known is None:
            manifest = json.loads((snap.parent / "model" / MANIFEST).read_text())
            self._register_checkpoint(snap.parent, step, manifest.get("metrics"), method)

    def _prune(self, st: TrainState) -> None:
        """Keep the newest ``keep_checkpoints`` checkpoints, and the best one whatever its age
        (it is what the job ships). Records go first, then folders: a kill in between leaves
        an unrecorded folder, never a record of a missing one."""
        keep = self.job.hyperparameters.get("keep_checkpoints", 3)
        best = st.best or {}
        with self.jobs.db.session() as s:
            recs = list(s.scalars(select(CheckpointRecord).where(
                CheckpointRecord.job_id == self.job.id).order_by(
                CheckpointRecord.step_number.desc())))
            gone = [r for r in recs[keep:] if r.model_id != best.get("checkpoint")
                    and r.step_number != best.get("step") and r.path != best.get("path")]
            for r in gone:
                s.delete(r)
                s.execute(delete(ModelRecord).where(ModelRecord.id == r.model_id))
        for r in gone:
            shutil.rmtree(Path(r.path).parent, ignore_errors=True)

    def _model_record(self, model_id: str, path: Path, method) -> ModelRecord:
        base = Catalog(self.settings).get(self.job.model)
        return ModelRecord(id=model_id, kind="chat", format="peft" if method.is_adapter else "hf",
                           path=str(path), base_model=self.job.model if method.is_adapter else None,
                           parameters=base.parameters, context_length=base.context_length,
                           size_bytes=sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                           if path.exists() else None, owned_by=ORG_OWNER,
                           created_at=int(time.time()), info={"job": self.job.id})

    def _write_manifest(self, out: Path, trainer: Trainer, row: dict | None, step: int,
                        extra: dict | None = None) -> None:
        import peft
        import transformers

        import afinar

        job, files = self.job, Files(self.settings)
        base = Catalog(self.settings).get(job.model)
        data = {
            "job": job.id, "base_model": job.model, "base_model_source": str(base.path),
            "base_model_sha256": sha256_file(base.path) if base.path.is_file() else None,
            "datasets": {k: files.get(v).sha256 for k, v in (
                ("training_file", job.training_file), ("validation_file", job.validation_file))
                if v},
            "template_fingerprint": template_fingerprint(
                trainer.tok, getattr(trainer.model, "generation_config", None)),
            "method": job.method["type"], "method_config": job.method,
            "traits": trainer.method.traits(),
            "hyperparameters": trainer.hp.model_dump(), "seed": job.seed, "step": step,
            "metrics": row, "versions": {"afinar": afinar.__version__,
                                         "torch": torch.__version__,
                                         "transformers": transformers.__version__,
                                         "peft": peft.__version__},
            **(extra or {}),
        }
        atomic_write_text(out / MANIFEST, json.dumps(data, indent=1, default=str))

    def _finish(self, trainer: Trainer, st: TrainState, method, info, tok, hp, seconds) -> None:
        job = self.job
        final_id = model_id_for(job)
        chosen = st.best["checkpoint"] if st.best else None
        last_row = st.history[-1] if st.history else {}
        why = (f"best full validation loss {st.best['full_valid_loss']:.4f} at step "
               f"{st.best['step']}" if st.best else "final step (no validation data)")
        dest = self.settings.models_dir / "ft" / job.id
        with atomic_dir(dest) as tmp:
            if chosen:
                src = st.best.get("path")
                if src is None:  # a state saved before the best record carried its path
                    with self.jobs.db.session() as s:
                        src = s.scalar(select(CheckpointRecord.path).where(
                            CheckpointRecord.model_id == chosen))
                shutil.copytree(Path(src), tmp, dirs_exist_ok=True)
            else:
                method.save(trainer.model, tmp, tok)
            self._write_manifest(tmp, trainer, last_row, st.best["step"] if st.best else st.step,
                                 {"chosen": {"checkpoint": chosen, "why": why},
                                  "best": st.best, "stop_reason": st.stop_reason,
                                  "train_seconds": round(seconds, 2),
                                  "trained_tokens": st.trained_tokens})
        with self.jobs.db.session() as s:
            s.merge(self._model_record(final_id, dest, method))
        result = self._results_csv(st.history)
        self.jobs.update(job.id, status="succeeded", finished_at=int(time.time()), worker=None,
                       fine_tuned_model=final_id, trained_tokens=st.trained_tokens,
                       result_files=[result])
        self.event("info", "message", f"New fine-tuned model created: {final_id} ({why})")
        self.event("info", "message", "The job has successfully completed")

    def _results_csv(self, history: list[dict]) -> str:
        cols = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy",
                "full_valid_loss", "full_valid_mean_token_accuracy"]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(cols)
        for r in history:
            r = {**r, "train_accuracy": r.get("train_mean_token_accuracy")}
            w.writerow(["" if r.get(c) is None else r[c] for c in cols])
        atomic_write_text(self.dir / "metrics.csv", buf.getvalue())
        files = Files(self.settings)
        # the job's readers read its results: the key that created it and its groups, in the
        # job's project (else the training file's uploader, for jobs made before keys had jobs)
        job = self.job
        owner, groups = job.owner_key_id, job.owner_groups
        if owner is None:
            try:
                train = files.get(job.training_file)
                owner, groups = train.owner_key_id, train.owner_groups
            except NotFound:
                pass
        rec = files.create(io.BytesIO(buf.getvalue().encode()), f"{job.id}-results.csv",
                           "fine-tune-results", owner_key_id=owner, owner_groups=groups,
                           project_id=job.project_id or "default")
        return rec.id


ORG_OWNER = "user"


def _ckpt_metrics(row: dict) -> dict[str, Any]:
    keys = ("step", "train_loss", "train_mean_token_accuracy", "valid_loss",
            "valid_mean_token_accuracy", "full_valid_loss", "full_valid_mean_token_accuracy")
    return {k: row.get(k) for k in keys}


def new_worker_name() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{new_id('', 6)}"
