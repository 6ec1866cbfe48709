"""From predictions to the measured table: per strategy, each metric's mean with its 95% bootstrap
interval and notes, the cost columns, and paired differences on the main metric.

Costs are what the run measured: prompt and completion tokens per case, what few-shot examples
or retrieved sources added to each prompt (prompt tokens beyond the case's own messages),
latency p50/p95 (retrieval included), generation tokens/s, and for fine-tuned models the
training time and trained tokens of their job.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from afinar.evals.cases import Case
from afinar.evals.metrics import Metric, Prediction, Score, bootstrap_ci


def score_all(metrics: dict[str, Metric], cases: list[Case],
              preds: dict[str, dict[str, Prediction]], progress=None
              ) -> dict[str, dict[str, dict[str, Score | None]]]:
    """scores[strategy][case_id][metric]; an errored prediction scores 0 where a metric applies
    to its case."""
    out: dict[str, dict[str, dict[str, Score | None]]] = {}
    for name, by_case in preds.items():
        out[name] = {}
        for c in cases:
            p = by_case[c.id]
            out[name][c.id] = {m: metric.score(p, c) for m, metric in metrics.items()}
            if progress:
                progress(1)
    return out


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize(strategies: list[dict[str, Any]], cases: list[Case],
              preds: dict[str, dict[str, Prediction]],
              scores: dict[str, dict[str, dict[str, Score | None]]], metric_names: list[str],
              main: str, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    rows = []
    for st in strategies:
        name = st["name"]
        mets = {}
        for m in metric_names:
            vals = [s.value for c in cases if (s := scores[name][c.id][m]) is not None]
            notes = Counter(s.note.split(":")[0] for c in cases
                            if (s := scores[name][c.id][m]) is not None and s.note)
            lo, hi = bootstrap_ci(vals, n_boot, seed)
            mets[m] = {"mean": float(np.mean(vals)) if vals else None, "lo": lo if vals else None,
                       "hi": hi if vals else None, "n": len(vals), "notes": dict(notes)}
        ps = [preds[name][c.id] for c in cases]
        ok = [p for p in ps if p.error is None]
        gen_s = sum(p.generation_s for p in ok)
        cost = {
            "prompt_tokens": float(np.mean([p.prompt_tokens for p in ok])) if ok else None,
            "completion_tokens": float(np.mean([p.completion_tokens for p in ok])) if ok else None,
            "added_prompt_tokens": float(np.mean([p.added_tokens for p in ok])) if ok else None,
            "latency_p50_s": _pct([p.latency_s for p in ok], 50),
            "latency_p95_s": _pct([p.latency_s for p in ok], 95),
            "tokens_per_s": sum(p.completion_tokens for p in ok) / gen_s if gen_s > 0 else None,
            "errors": len(ps) - len(ok),
            **st.get("training", {}),
        }
        rows.append({**st, "metrics": mets, "cost": cost})
    return {"main_metric": main, "n_cases": len(cases), "strategies": rows,
            "paired": paired_vs_best(rows, cases, scores, main, n_boot, seed)}


def paired_vs_best(rows: list[dict[str, Any]], cases: list[Case], scores, main: str,
                   n_boot: int, seed: int) -> dict[str, Any]:
    """Each strategy's difference from the best on ``main`` over the cases both were scored on,
    with a paired bootstrap interval: an interval that holds 0 is a tie."""
    scored = [r for r in rows if r["metrics"][main]["mean"] is not None]
    if not scored:
        return {}
    best = max(scored, key=lambda r: r["metrics"][main]["mean"])
    out = {"best": best["name"], "diffs": {}}
    for r in scored:
        d = [a.value - b.value for c in cases
             if (a := scores[r["name"]][c.id][main]) is not None
             and (b := scores[best["name"]][c.id][main]) is not None]
        if not d:
            continue
        lo, hi = bootstrap_ci(d, n_boot, seed)
        out["diffs"][r["name"]] = {"diff": float(np.mean(d)), "lo": lo, "hi": hi, "n": len(d)}
    return out


def case_rows(cases: list[Case], strategies: list[str], preds, scores, main: str,
              baseline: str | None) -> list[dict[str, Any]]:
    """The per-example view: each case with every strategy's answer, scores and whether it
    flipped against ``baseline`` on the main metric (+1 fixed, -1 broke, 0 same)."""
    out = []
    for c in cases:
        row: dict[str, Any] = {"case": c.id, "line": c.line, "question": c.question,
                               "reference": c.reference, "results": {}}
        base = scores[baseline][c.id][main] if baseline else None
        for name in strategies:
            p: Prediction = preds[name][c.id]
            sc = scores[name][c.id]
            m = sc[main]
            flip = None
            if base is not None and m is not None and name != baseline:
                flip = int(np.sign(round(m.value - base.value, 9)))
            row["results"][name] = {
                "text": p.text, "error": p.error,
                "scores": {k: (None if v is None else v.value) for k, v in sc.items()},
                "notes": {k: v.note for k, v in sc.items() if v is not None and v.note},
                "sources": [s["source"].rsplit("/", 1)[-1] for s in p.sources or []],
                "prompt_tokens": p.prompt_tokens, "completion_tokens": p.completion_tokens,
                "latency_s": round(p.latency_s, 4), "flip": flip}
        out.append(row)
    return out
