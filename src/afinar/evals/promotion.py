"""Promotion: move an alias to a candidate model only when an evaluation says it is better.

``promote(alias, candidate, eval_file)`` runs the evaluation of ``eval_file`` with the same
runner and advisor as ``afinar eval run``, on two columns made from the file's one strategy (its
prompt: plain or grounded): ``current[...]`` (the model the alias stands for now) and
``candidate[...]``. The decision reads the table's paired bootstrap interval of the difference
candidate - current on the main metric:

- the interval lies above 0: the candidate is better, the alias moves;
- it lies below 0: the candidate is worse, the alias stays;
- it holds 0 (a tie): the alias moves only when the candidate is cheaper by the advisor's cost
  rule (``advisor.cost_key``: first needing no training, then fewer tokens per request); latency
  counts only on a quiet machine and only when the candidate's p95 is below the current model's
  median (a tie on noise alone never moves an alias).

A gate (``gate``: a grader of ``afinar.graders``, e.g. a YAML file in OpenAI's shape) may also
be required: the candidate's answers graded against each case (``item``: the case's metadata,
``reference`` and ``question``, as the grader metric reads them) must reach a mean score of at
least ``gate_min``, else the alias stays whatever the table says.

A candidate that is the alias's current model is refused without an evaluation. Every decision
but a dry run's is a row of the alias's history (``promote``, or ``refuse``: nothing moved) with
its reasons, sentences built only from the table's numbers, and the run id. The alias moves only
if it still stands for the model that was evaluated (another move meanwhile: ``Conflict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from afinar.errors import InvalidRequest
from afinar.evals.advisor import cost_key
from afinar.evals.config import EvalConfig, load_config
from afinar.evals.strategies import STRATEGIES, short_model
from afinar.models.aliases import Aliases, local_actor
from afinar.models.catalog import Catalog
from afinar.settings import Settings, get_settings

PLAIN = ("base", "fine_tuned")  # the column types: (not grounded, grounded) below
GROUNDED = ("rag", "fine_tuned_rag")


@dataclass
class Decision:
    alias: str
    current: str  # the model the alias stood for when evaluated
    candidate: str
    promote: bool
    rule: str  # better | worse | tie_cheaper | tie_not_cheaper | same_model | unscored | gate
    reasons: list[str]
    main_metric: str | None = None
    diff: dict[str, Any] | None = None  # candidate - current: mean, lo, hi, n
    run_id: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # current/candidate -> column name
    dry_run: bool = False
    moved: bool = False
    gate: dict[str, Any] | None = None  # grader, mean score, minimum, passed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def column_names(current: str, candidate: str) -> dict[str, str]:
    return {"current": f"current[{short_model(current)}]",
            "candidate": f"candidate[{short_model(candidate)}]"}


def check_strategies(config: EvalConfig):
    """The evaluation's one strategy (its prompt is used for both models); refused otherwise."""
    if len(config.strategies) != 1:
        raise InvalidRequest(f"a promotion compares two models with one strategy; the evaluation "
                             f"lists {len(config.strategies)} (keep one: its prompt, plain or "
                             "with retrieval, is used for both)", param="strategies")
    spec = config.strategies[0]
    if spec.type not in PLAIN + GROUNDED:
        raise InvalidRequest(f"a promotion's strategy is one of {', '.join(PLAIN + GROUNDED)} "
                             f"(its prompt is used for both models), not {spec.type!r}",
                             param="strategies")
    return spec


def promotion_config(config: EvalConfig, current: str, candidate: str,
                     settings: Settings | None = None) -> EvalConfig:
    """``config`` with its one strategy as two columns, the current model then the candidate
    (``fine_tuned`` types for fine-tunes, so the table carries their training cost)."""
    spec = check_strategies(config)
    cls = STRATEGIES.get(spec.type)
    catalog = Catalog(settings or get_settings())
    names = column_names(current, candidate)
    columns = []
    for role, model in (("current", current), ("candidate", candidate)):
        tuned = catalog.get(model).base_model is not None
        kind = (GROUNDED if cls.uses_kb else PLAIN)[int(tuned)]
        columns.append(spec.model_copy(update={"type": kind, "model": model, "models": [],
                                               "jobs": [], "name": names[role]}))
    return config.model_copy(update={"strategies": columns, "model": current})


def _cost_words(cand: dict[str, Any], cur: dict[str, Any]) -> str | None:
    """Why the candidate is cheaper (None: it is not), by the advisor's cost rule."""
    ck, uk = cost_key(cand, use_latency=False), cost_key(cur, use_latency=False)
    if ck[0] != uk[0]:
        return "it needs no training and the current model does" if ck < uk else None
    if ck[1] != uk[1]:
        return (f"it uses {uk[1] - ck[1]:.1f} fewer tokens per request ({ck[1]:.1f} vs "
                f"{uk[1]:.1f})") if ck < uk else None
    return None


def _faster(cand: dict[str, Any], cur: dict[str, Any], quiet: bool) -> str | None:
    p95, p50 = cand["cost"].get("latency_p95_s"), cur["cost"].get("latency_p50_s")
    if quiet and p95 is not None and p50 is not None and p95 < p50:
        return (f"it answers faster: its p95 latency {p95:.3f} s is below the current model's "
                f"median {p50:.3f} s, measured on a quiet machine")
    return None


def decide(summary: dict[str, Any], current: str, candidate: str) -> tuple[bool, str, list[str],
                                                                           dict | None]:
    """(promote, rule, reasons, the paired difference candidate - current) from a finished
    table whose columns are ``current`` and ``candidate`` (their names)."""
    main = summary["main_metric"]
    rows = {r["name"]: r for r in summary["strategies"]}
    cur, cand = rows[current], rows[candidate]
    paired = summary.get("paired") or {}
    diffs = paired.get("diffs") or {}
    mc, mk = cur["metrics"][main], cand["metrics"][main]
    if mc["mean"] is None or mk["mean"] is None or not diffs:
        return False, "unscored", [f"{main} could not be computed for both models: nothing to "
                                   "decide on, the alias stays."], None
    if paired["best"] == candidate:
        d = diffs[current]
        diff = {"mean": -d["diff"], "lo": -d["hi"], "hi": -d["lo"], "n": d["n"]}
    else:
        d = diffs[candidate]
        diff = {"mean": d["diff"], "lo": d["lo"], "hi": d["hi"], "n": d["n"]}
    head = (f"On {main} ({summary['n_cases']} cases) the candidate scores {mk['mean']:.2f} "
            f"(95% interval {mk['lo']:.2f}-{mk['hi']:.2f}) and the current model "
            f"{mc['mean']:.2f} ({mc['lo']:.2f}-{mc['hi']:.2f}); their paired difference is "
            f"{diff['mean']:+.2f} (95% interval {diff['lo']:+.2f} to {diff['hi']:+.2f}, "
            f"{diff['n']} cases).")
    if diff["lo"] > 0:
        return True, "better", [head, "The interval lies above 0: the candidate is better, "
                                "so the alias moves to it."], diff
    if diff["hi"] < 0:
        return False, "worse", [head, "The interval lies below 0: the candidate is worse, "
                                "so the alias stays."], diff
    quiet = not (summary.get("latency") or {}).get("under_load")
    why = _cost_words(cand, cur) or _faster(cand, cur, quiet)
    if why:
        return True, "tie_cheaper", [head, f"The interval holds 0, a tie, and the candidate is "
                                     f"cheaper: {why}; so the alias moves to it."], diff
    return False, "tie_not_cheaper", [head, "The interval holds 0, a tie, and the candidate is "
                                      "not cheaper (training, tokens per request, latency): "
                                      "the alias stays."], diff


def gate_check(gate: str | Path, gate_min: float, ev, config: EvalConfig, column: str,
               settings: Settings) -> dict[str, Any]:
    """Grade the candidate's answers of run ``ev`` (column ``column``) with grader ``gate``."""
    from afinar.evals.cases import read_cases
    from afinar.graders import load_grader

    grader = load_grader(gate, settings=settings)
    preds = ev.predictions()[column]
    scores = [grader.grade(preds[c.id].text, {**c.metadata, "reference": c.reference,
                                              "question": c.question}).score
              for c in read_cases(config.test_file, config.limit) if c.id in preds]
    mean = sum(scores) / len(scores) if scores else 0.0
    return {"grader": str(gate), "name": grader.name, "mean": mean, "min": gate_min,
            "n": len(scores), "passed": bool(scores) and mean >= gate_min}


def promote(alias: str, candidate: str, eval_file: str | Path | EvalConfig, *,
            dry_run: bool = False, actor: str | None = None, settings: Settings | None = None,
            run_eval=None, info: dict[str, Any] | None = None, gate: str | Path | None = None,
            gate_min: float = 0.5) -> tuple[Decision, dict | None]:
    """Evaluate ``candidate`` against the model ``alias`` stands for and move the alias when the
    candidate wins (see the module's rule); returns the decision and the evaluation's summary.
    ``run_eval(config) -> EvalRun``: the runner with the caller's progress display (default:
    ``runner.run``). ``info``: kept with the history row (e.g. the improve run)."""
    from afinar.evals import runner

    settings = settings or get_settings()
    actor = actor or local_actor()
    aliases = Aliases(settings)
    current = aliases.get(alias).model  # unknown alias: the one error, before any work
    cand = Catalog(settings).get(candidate).id  # an alias given as candidate: its model
    config = eval_file if isinstance(eval_file, EvalConfig) else load_config(eval_file)
    check_strategies(config)
    if gate is not None:
        from afinar.graders import load_grader

        load_grader(gate, settings=settings)  # a bad grader stops here, before any answer
    extra = {**(info or {}), **({"eval_file": str(eval_file)}
                                if not isinstance(eval_file, EvalConfig) else {})}
    if cand == current:
        d = Decision(alias, current, cand, False, "same_model",
                     [f"The candidate {cand} is the model {alias} already stands for: nothing to "
                      "compare, the alias stays."], dry_run=dry_run)
        if not dry_run:
            aliases.record(alias, "refuse", actor=actor, from_model=current, to_model=cand,
                           reason=" ".join(d.reasons), info={"rule": d.rule, **extra})
        return d, None
    cfg = promotion_config(config, current, cand, settings)
    ev = (run_eval or (lambda c: runner.run(c, settings=settings)))(cfg)
    summary = ev.summary()
    names = column_names(current, cand)
    ok, rule, reasons, diff = decide(summary, names["current"], names["candidate"])
    for f in summary.get("forgetting") or []:
        if f["flagged"] and f["model"] == cand:
            reasons.append(f"Forgetting check: the candidate {'; '.join(f['reasons'])}.")
    checked = None
    if gate is not None:
        checked = gate_check(gate, gate_min, ev, cfg, names["candidate"], settings)
        words = (f"Gate {checked['name']}: the candidate's mean score is {checked['mean']:.2f} "
                 f"on {checked['n']} cases (at least {gate_min:.2f} needed)")
        if checked["passed"]:
            reasons.append(words + ": passed.")
        else:
            reasons.append(words + (": failed, so the alias stays." if ok else ": failed."))
            rule = "gate" if ok else rule  # a refusal keeps the table's own rule
            ok = False
    d = Decision(alias, current, cand, ok, rule, reasons, summary["main_metric"], diff, ev.id,
                 names, dry_run, gate=checked)
    if dry_run:
        return d, summary
    row = {"rule": rule, "run": ev.id, "main_metric": d.main_metric, "diff": diff,
           "gate": checked, **extra}
    if ok:
        aliases.set(alias, cand, actor=actor, reason=" ".join(reasons), action="promote",
                    info=row, expect=current)
        d.moved = True
    else:
        aliases.record(alias, "refuse", actor=actor, from_model=current, to_model=cand,
                       reason=" ".join(reasons), info=row)
    return d, summary


__all__ = ["Decision", "check_strategies", "column_names", "decide", "promote", "promotion_config"]
