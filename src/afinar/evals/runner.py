"""Running an evaluation, and where its results live.

A run is a folder ``$AFINAR_HOME/evals/<evalrun-id>/``:

    run.json            config, status (running | succeeded | failed | interrupted), pid, times
    predictions.jsonl   one line per (strategy, case), appended as each answer is produced
    timing.jsonl        one line per timed section: when, how long it waited, the load beside it
    summary.json        the table, per-case view, forgetting check and advice (atomic write)

Answers are the slow part, so they are kept as they come: a run that crashes or is stopped is
resumed with ``run(..., resume=run_id)``, which skips what is already answered (a torn last line
is ignored). A run whose process died while "running" reads as "interrupted".
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from afinar.errors import InvalidRequest, NotFound
from afinar.evals import advisor, forgetting, strategies, table, timing
from afinar.evals.cases import read_cases
from afinar.evals.config import EvalConfig
from afinar.evals.metrics import GraderMetric, Judge, Prediction, build as build_metric
from afinar.ids import new_id
from afinar.models import ModelCache
from afinar.processes import pid_alive
from afinar.settings import Settings, get_settings
from afinar.store.atomic import atomic_write_text


def runs_dir(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).home / "evals"


class EvalRun:
    def __init__(self, path: Path):
        self.path = path
        self.id = path.name

    @property
    def meta(self) -> dict[str, Any]:
        meta = json.loads((self.path / "run.json").read_text())
        if meta["status"] == "running" and not (meta.get("pid") == os.getpid()
                                                or pid_alive(meta.get("pid"))):
            meta["status"] = "interrupted"
        return meta

    def _write_meta(self, **changes: Any) -> None:
        meta = json.loads((self.path / "run.json").read_text())
        meta.update(changes)
        atomic_write_text(self.path / "run.json", json.dumps(meta, indent=1))

    @property
    def project(self) -> str:
        return self.meta["config"].get("project") or "default"  # runs before projects: default

    @property
    def config(self) -> EvalConfig:
        return EvalConfig.model_validate(self.meta["config"])

    def predictions(self) -> dict[str, dict[str, Prediction]]:
        out: dict[str, dict[str, Prediction]] = {}
        f = self.path / "predictions.jsonl"
        if not f.is_file():
            return out
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash: that answer is produced again
            name, case = row.pop("strategy"), row.pop("case")
            out.setdefault(name, {})[case] = Prediction(**row)
        return out

    def loads(self) -> list[dict[str, Any]]:
        """The timed sections so far (``timing.Load``), one per strategy and sitting."""
        f = self.path / "timing.jsonl"
        if not f.is_file():
            return []
        out = []
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def summary(self) -> dict[str, Any]:
        f = self.path / "summary.json"
        if not f.is_file():
            raise InvalidRequest(f"evaluation {self.id} has no results yet (status "
                                 f"{self.meta['status']})", param="run_id")
        return json.loads(f.read_text())


def _append_load(ev: EvalRun, load: dict[str, Any]) -> None:
    with (ev.path / "timing.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(load) + "\n")


def get_run(run_id: str, settings: Settings | None = None, project: str | None = None
            ) -> EvalRun:
    """A run by id; with ``project``, another project's run does not exist (NotFound)."""
    if not run_id.replace("-", "").replace("_", "").isalnum():
        raise NotFound(f"no evaluation {run_id!r}", param="run_id")
    path = runs_dir(settings) / run_id
    if not (path / "run.json").is_file():
        raise NotFound(f"no evaluation {run_id!r}", param="run_id")
    ev = EvalRun(path)
    if project is not None and ev.project != project:
        raise NotFound(f"no evaluation {run_id!r}", param="run_id")
    return ev


def list_runs(settings: Settings | None = None, project: str | None = None) -> list[EvalRun]:
    """Runs, newest first; with ``project``, that project's only."""
    d = runs_dir(settings)
    runs = [EvalRun(p) for p in d.iterdir() if (p / "run.json").is_file()] if d.is_dir() else []
    runs = [r for r in runs if project is None or r.project == project]
    return sorted(runs, key=lambda r: r.meta["created_at"], reverse=True)


def _training(model_id: str, settings: Settings) -> dict[str, Any]:
    """The training cost of a fine-tuned model, from its job."""
    from afinar.models import Catalog
    from afinar.tuning.jobs import Jobs

    info = Catalog(settings).get(model_id)
    job_id = (info.info or {}).get("job")
    if not job_id:
        return {}
    job = Jobs(settings).get(job_id)
    secs = (job.finished_at - job.started_at) if job.finished_at and job.started_at else None
    return {"job": job.id, "training_s": secs, "trained_tokens": job.trained_tokens,
            "base_model": info.base_model}


def run(config: EvalConfig, *, settings: Settings | None = None, resume: str | None = None,
        cache: ModelCache | None = None, progress=None) -> EvalRun:
    """Answer every case with every strategy, score, summarise, advise. ``progress(stage, name,
    done, total)`` is called as work advances (the CLI draws bars from it)."""
    settings = settings or get_settings()
    cache = cache or ModelCache(max_models=2)
    if resume:
        ev = get_run(resume, settings)
        config = ev.config
        ev._write_meta(status="running", pid=os.getpid(), error=None)
    else:
        ev = EvalRun(runs_dir(settings) / new_id("evalrun-"))
        ev.path.mkdir(parents=True)
        atomic_write_text(ev.path / "run.json", json.dumps({
            "id": ev.id, "name": config.name, "created_at": int(time.time()), "status": "running",
            "pid": os.getpid(), "config": config.model_dump(mode="json")}, indent=1))
    try:
        summary = _execute(ev, config, settings, cache, progress or (lambda *a: None))
    except KeyboardInterrupt:
        ev._write_meta(status="interrupted", pid=None)
        raise
    except BaseException as e:
        ev._write_meta(status="failed", pid=None, error=f"{type(e).__name__}: {e}")
        raise
    atomic_write_text(ev.path / "summary.json", json.dumps(summary, indent=1))
    ev._write_meta(status="succeeded", pid=None, finished_at=int(time.time()))
    return ev


def _execute(ev: EvalRun, config: EvalConfig, settings: Settings, cache: ModelCache,
             progress) -> dict[str, Any]:
    def load(model_id: str):
        return cache.get(model_id, settings=settings)

    default_model = config.model or settings.default_model
    ctx = strategies.Context(load=load, default_model=default_model,
                             train_file=config.train_file, knowledge_base=config.knowledge_base,
                             generation=config.generation)
    specs = strategies.expand(config.strategies)
    strats = [strategies.build(s, ctx) for s in specs]
    metrics = {name: build_metric(spec) for name, spec in
               zip(config.metric_names(), config.metrics)}
    for m in metrics.values():
        if isinstance(m, (Judge, GraderMetric)):  # they grade with a model: the run's cache
            m.loader = load
    cases = read_cases(config.test_file, config.limit)

    done = ev.predictions()
    loads: list[dict[str, Any]] = ev.loads()
    with (ev.path / "predictions.jsonl").open("a", encoding="utf-8") as out:
        # one model after another: the model cache holds two, so group strategies by model
        for st in sorted(strats, key=lambda s: s.model):
            have = done.setdefault(st.name, {})
            progress("answer", st.name, len(have), len(cases))
            todo = [c for c in cases if c.id not in have]
            if not todo:
                continue
            # timed alone: no other evaluation's timed section overlaps this one (timing.py)
            with timing.quiet(settings, st.name) as section:
                st.warm_up(todo[0])
                section.begin()
                for c in todo:
                    p = st.answer(c)
                    have[c.id] = p
                    out.write(json.dumps({"strategy": st.name, "case": c.id, **asdict(p)})
                              + "\n")
                    out.flush()
                    progress("answer", st.name, len(have), len(cases))
            loads.append(section.as_dict())
            _append_load(ev, section.as_dict())

    names = [s.name for s in strats]
    preds = {n: done[n] for n in names}
    total = len(names) * len(cases)
    counter = {"n": 0}

    def scored(k: int) -> None:
        counter["n"] += k
        progress("score", "metrics", counter["n"], total)

    scores = table.score_all(metrics, cases, preds, scored)
    training = {s.model: _training(s.model, settings) for s in strats if s.fine_tuned}
    meta = []
    for s in strats:
        row = {"name": s.name, "type": s.type, "model": s.model, "fine_tuned": s.fine_tuned,
               "uses_kb": s.uses_kb, "k": s.spec.k}
        if s.fine_tuned:
            row["training"] = training[s.model]
        meta.append(row)
    summary = table.summarize(meta, cases, preds, scores, config.metric_names(), config.main,
                              config.bootstrap_samples, config.seed)
    baseline = next((s.name for s in strats if s.type == "base"), None)
    summary["cases"] = table.case_rows(cases, names, preds, scores, config.main, baseline)
    summary["baseline"] = baseline
    summary["latency"] = {"sections": loads, "note": timing.describe(loads),
                          "under_load": any(x["under_load"] for x in loads)}
    summary["forgetting"] = []
    fspec = config.forgetting_spec()
    tuned = {(m, t.get("base_model") or default_model) for m, t in training.items()}
    if fspec is not None and tuned:
        summary["forgetting"] = forgetting.check(
            load, sorted(tuned), fspec.threshold, fspec.text_file, fspec.qa_file,
            progress=lambda m: progress("forgetting", m, 1, 1))
    summary["advice"] = advisor.advise(summary, summary["forgetting"])
    summary["run"] = {"id": ev.id, "name": config.name, "test_file": config.test_file,
                      "metrics": config.metric_names(), "created_at": ev.meta["created_at"]}
    return summary
