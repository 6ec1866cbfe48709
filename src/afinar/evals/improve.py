"""The improvement loop in one call (``afinar improve --alias NAME``): new feedback on the
alias's answers -> a dataset -> a fine-tuning job -> an evaluation -> promote or not.

1. Feedback: the items (``afinar.store.feedback``) on requests sent to the alias, or to a model
   it has stood for, newer than the last run's (the alias's ``info["improve"]["feedback_seq"]``).
   Fewer than ``min_feedback`` new items: refused (``InvalidRequest``) before any work.
2. Method, from what the data allows (``auto``), each choice with its reason: preference pairs
   (a preferred choice, or +1 and -1 ratings of the same prompt) -> ``dpo``, corrections counting
   as pairs too; else corrections -> ``sft`` (LoRA on the corrected answers); else thumbs alone
   -> ``kto`` when a ``kto`` method is registered (``afinar.tuning.methods``; otherwise refused,
   saying so). A method asked for by name must be registered and have its data.
3. The export: ``afinar.data.feedback.export`` (the same as ``afinar feedback export``),
   written into the run's folder with its counts of used and dropped feedback.
4. The job: ``Jobs.create`` on the alias's base (its model, or a fine-tune's base: adapters train
   on a base), run by a worker (``wait(job_id)``; the default spawns one as ``afinar tune
   create`` does and waits for the job's end).
5. The evaluation and the decision: ``afinar.evals.promotion.promote`` (the same runner and
   advisor; the candidate is the job's model), recorded in the alias's history. A ``grader`` is
   the promotion's gate (its mean score on the candidate's answers must reach ``gate_min``);
   the loop does not train with GRPO yet, and says so when a grader would have asked for it.

The report (every step's numbers) is ``$AFINAR_HOME/improve/<id>/report.json``. The feedback
cursor moves once a run has trained and evaluated, promoted or not; a failed job leaves it, so
the next run uses the same feedback again. ``dry_run``: steps 1-3 only (the export is written
into the run's folder); no job, nothing moved, the cursor stays.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from afinar.errors import InvalidRequest
from afinar.evals.config import load_config
from afinar.evals.promotion import check_strategies, promote
from afinar.ids import new_id
from afinar.models.aliases import Aliases, local_actor
from afinar.models.catalog import Catalog
from afinar.settings import Settings, get_settings
from afinar.store.access import Caller
from afinar.store.atomic import atomic_write_text

METHODS = ("auto", "dpo", "kto", "sft", "grpo")
TRAINED_BY = {"dpo": "dpo", "kto": "kto", "sft": "lora"}  # loop method -> registered method
EXPORT_OF = {"dpo": "dpo", "kto": "kto", "sft": "sft"}
DEFAULT_MIN_FEEDBACK = 10
OWNER = Caller(None, "afinar improve", admin=True, owner=True)  # reads every project's feedback
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class ImproveReport:
    id: str
    alias: str
    model: str  # the alias's model when the run started
    started_at: float
    dry_run: bool = False
    feedback: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)
    finished_at: float | None = None
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def runs_dir(settings: Settings) -> Path:
    return settings.home / "improve"


def served_names(aliases: Aliases, name: str) -> set[str]:
    """The ``model`` names whose requests count as the alias's: the alias and every model it
    has stood for."""
    out = {name, aliases.get(name).model}
    out |= {h.to_model for h in aliases.history(name) if h.to_model and h.action != "refuse"}
    return out


def new_feedback(settings: Settings, aliases: Aliases, name: str, after_seq: int) -> list:
    from afinar.store.feedback import Feedback

    names = served_names(aliases, name)
    return [(f, r) for f, r in Feedback(settings).items(OWNER)
            if r.model in names and f.seq > after_seq]


def _registered(name: str) -> bool:
    from afinar.tuning.methods import METHODS as REGISTERED

    return name in REGISTERED


def choose_method(requested: str, items: list, grader: str | None = None
                  ) -> tuple[str, list[str]]:
    """(the loop's method: dpo, kto or sft; the reasons) from the feedback's kinds."""
    from afinar.data.feedback import build

    if requested not in METHODS:
        raise InvalidRequest(f"--method must be one of {', '.join(METHODS)}, not {requested!r}",
                             param="method")
    types = Counter(f.type for f, _ in items)
    pairable = [x for x in items if x[0].type in ("preference", "rating")]
    pairs = len(build("dpo", pairable)[0]) if pairable else 0
    counts = (f"{types['preference']} preferences, {types['rating']} ratings, "
              f"{types['correction']} corrections")
    reasons = [f"New feedback: {counts}; {pairs} preference pairs from preferences and "
               "ratings."]
    if requested == "grpo" or (requested == "auto" and grader):
        why = ("grpo is not registered as a tuning method (afinar.tuning.methods)"
               if not _registered("grpo") else
               "the loop does not drive grpo yet: it trains from exported feedback")
        if requested == "grpo":
            raise InvalidRequest(f"--method grpo: {why}", param="method")
        reasons.append(f"A grader is configured, but {why}: choosing from the feedback.")
    if requested != "auto":
        if not _registered(TRAINED_BY[requested]):
            raise InvalidRequest(f"--method {requested}: no {TRAINED_BY[requested]!r} method "
                                 "is registered (afinar plugins lists them)", param="method")
        return requested, reasons + [f"--method {requested} was asked for."]
    if pairs:
        return "dpo", reasons + [f"{pairs} preference pairs: dpo (corrections count as pairs "
                                 "of corrected over original answers)."]
    if types["correction"]:
        return "sft", reasons + [f"No pairs; {types['correction']} corrections: sft (LoRA on "
                                 "the corrected answers)."]
    if types["rating"]:
        if _registered("kto"):
            return "kto", reasons + [f"Thumbs only ({types['rating']} unpaired ratings): kto."]
        raise InvalidRequest(f"the new feedback is thumbs only ({types['rating']} ratings, none "
                             "of opposite sign for the same prompt): that needs kto, and no "
                             "kto method is registered; dpo needs pairs and sft corrections",
                             param="method")
    raise InvalidRequest(f"no usable feedback ({counts})", param="method")


def _suffix(alias: str) -> str:
    return (re.sub(r"[^A-Za-z0-9_\-]", "-", alias)[:40] or "improve").strip("-") or "improve"


def wait_with_worker(settings: Settings) -> Callable[[str], str]:
    """Wait for a job's end, spawning a worker as ``afinar tune create`` does (again if the
    previous one exited before the job was queued)."""
    from afinar.tuning.jobs import Jobs
    from afinar.tuning.worker import spawn_worker

    def wait(job_id: str) -> str:
        jobs, last = Jobs(settings), 0.0
        while True:
            job = jobs.get(job_id)
            if job.status in TERMINAL:
                return job.status
            if job.status in ("queued", "validating_files") and time.time() - last > 5:
                spawn_worker(settings)
                last = time.time()
            time.sleep(0.5)
    return wait


def _save(report: ImproveReport, folder: Path) -> None:
    report.path = str(folder / "report.json")
    atomic_write_text(folder / "report.json", json.dumps(report.to_dict(), indent=1))


def check_eval(aliases: Aliases, alias: str, eval_file: str | Path | None) -> str:
    """The evaluation file to use: the one given, else the alias's last run's; checked now."""
    path = eval_file or (aliases.get(alias).info.get("improve") or {}).get("eval_file")
    if not path:
        raise InvalidRequest("give --eval eval.yaml (the first run of an alias names it; later "
                             "runs reuse it)", param="eval")
    check_strategies(load_config(path))
    return str(Path(path).resolve())


def improve(alias: str, *, eval_file: str | Path | None = None, method: str = "auto",
            grader: str | None = None, gate_min: float = 0.5, dry_run: bool = False,
            min_feedback: int = DEFAULT_MIN_FEEDBACK, hyperparameters: dict | None = None,
            seed: int = 0, wait: Callable[[str], str] | None = None,
            run_eval=None, on_step: Callable[[str, ImproveReport], None] | None = None,
            settings: Settings | None = None) -> ImproveReport:
    """Run the loop once (see the module); ``on_step(step, report)`` after each step."""
    from afinar.data.feedback import export
    from afinar.store.files import Files
    from afinar.tuning.jobs import Jobs

    settings = settings or get_settings()
    step = on_step or (lambda *_: None)
    aliases = Aliases(settings)
    a = aliases.get(alias)  # unknown alias: the one error, before any work
    if min_feedback < 1:
        raise InvalidRequest("--min-feedback must be at least 1", param="min_feedback")
    if method not in METHODS:
        raise InvalidRequest(f"--method must be one of {', '.join(METHODS)}, not {method!r}",
                             param="method")
    if grader is not None:
        from afinar.graders import load_grader

        load_grader(grader, settings=settings)  # a missing file or bad spec: one error now
    eval_path = check_eval(aliases, alias, eval_file)
    state = dict(a.info.get("improve") or {})
    since = int(state.get("feedback_seq") or 0)
    items = new_feedback(settings, aliases, alias, since)
    if len(items) < min_feedback:
        raise InvalidRequest(f"too little new feedback for {alias}: {len(items)} items since the "
                             f"last run (at least {min_feedback} needed: --min-feedback)",
                             param="min_feedback")
    report = ImproveReport(new_id("improve-"), alias, a.model, time.time(), dry_run)
    folder = runs_dir(settings) / report.id
    folder.mkdir(parents=True)
    report.feedback = {"new": len(items), "after_seq": since,
                       "through_seq": max(f.seq for f, _ in items),
                       "by_type": dict(Counter(f.type for f, _ in items)),
                       "models": sorted(served_names(aliases, alias))}
    step("feedback", report)
    chosen, reasons = choose_method(method, items, grader)
    report.method = {"asked": method, "chosen": chosen, "trains_with": TRAINED_BY[chosen],
                     "reasons": reasons}
    step("method", report)
    summary = export(EXPORT_OF[chosen], items, folder / f"feedback-{chosen}.jsonl")
    report.export = summary.to_dict()
    step("export", report)
    _save(report, folder)
    if dry_run:
        report.finished_at = time.time()
        _save(report, folder)
        return report

    target = Catalog(settings).get(a.model)
    base = target.base_model or target.id
    train = Files(settings).create_from_path(summary.paths["train"], "fine-tune")
    job = Jobs(settings).create(model=base, training_file=train.id,
                                method={"type": TRAINED_BY[chosen]},
                                hyperparameters=hyperparameters or {}, suffix=_suffix(alias),
                                seed=seed, metadata={"improve": report.id, "alias": alias})
    report.job = {"id": job.id, "base": base, "method": TRAINED_BY[chosen], "status": job.status}
    step("job", report)
    status = (wait or wait_with_worker(settings))(job.id)
    job = Jobs(settings).get(job.id)
    report.job.update(status=status, fine_tuned_model=job.fine_tuned_model,
                      trained_tokens=job.trained_tokens, error=job.error)
    _save(report, folder)
    step("trained", report)
    if status != "succeeded" or not job.fine_tuned_model:
        report.finished_at = time.time()
        _save(report, folder)
        return report

    decision, evaluated = promote(alias, job.fine_tuned_model, load_config(eval_path),
                                  actor=f"afinar improve {report.id} ({local_actor()})",
                                  settings=settings, run_eval=run_eval,
                                  info={"improve": report.id, "job": job.id,
                                        "eval_file": eval_path}, gate=grader,
                                  gate_min=gate_min)
    report.decision = decision.to_dict()
    if evaluated is not None:
        report.evaluation = {"run_id": decision.run_id, "main_metric": evaluated["main_metric"],
                             "n_cases": evaluated["n_cases"],
                             "strategies": evaluated["strategies"],
                             "paired": evaluated["paired"], "run": evaluated["run"]}
    aliases.update_info(alias, improve={"feedback_seq": report.feedback["through_seq"],
                                        "eval_file": eval_path, "report": report.id,
                                        "at": time.time()})
    report.finished_at = time.time()
    _save(report, folder)
    step("decision", report)
    return report


def get_report(report_id: str, settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    if not re.fullmatch(r"improve-[A-Za-z0-9]+", report_id or ""):
        raise InvalidRequest(f"no improve run {report_id!r}", param="report")
    f = runs_dir(settings) / report_id / "report.json"
    if not f.is_file():
        raise InvalidRequest(f"no improve run {report_id!r}", param="report")
    return json.loads(f.read_text())


__all__ = ["ImproveReport", "choose_method", "improve", "new_feedback", "served_names"]
