"""The advisor: a recommendation computed from the measured table, with its reasons in words.

The rule: the best strategy on the main metric wins, unless others tie with it (the paired
bootstrap interval of their difference from the best holds 0); among tied strategies the
cheapest wins: first one that needs no training, then the fewest tokens per request, then the
lowest median latency. Every reason is a sentence built from numbers in the same table, so the
advice cannot contradict what is shown. The reasons follow the decision table the field uses:
fine-tune when the answers are wrong in format or style, retrieve when they lack facts, both
when both are missing.
"""

from __future__ import annotations

from typing import Any

FORMAT_METRICS = ("json_schema_valid", "json_valid")
FACT_METRICS = ("contains_all",)


def _m(row: dict[str, Any], metric: str) -> float | None:
    v = row["metrics"].get(metric)
    return None if v is None else v["mean"]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def cost_key(row: dict[str, Any], use_latency: bool = True) -> tuple:
    """Cheapest first; latency only when it was measured on a quiet machine
    (``summary["latency"]["under_load"]`` false, see ``afinar.evals.timing``)."""
    c = row["cost"]
    tokens = (c.get("prompt_tokens") or 0) + (c.get("completion_tokens") or 0)
    latency = (c.get("latency_p50_s") or 0.0) if use_latency else 0.0
    return (bool(row.get("fine_tuned")), round(tokens, 1), latency)


def advise(summary: dict[str, Any], forgetting: list[dict[str, Any]] | None = None
           ) -> dict[str, Any]:
    main = summary["main_metric"]
    rows = {r["name"]: r for r in summary["strategies"]}
    paired = summary.get("paired") or {}
    if not paired.get("diffs"):
        return {"recommendation": None, "tied": [], "reasons": [
            f"No strategy could be scored on {main}: nothing to recommend."]}
    best = rows[paired["best"]]
    diffs = paired["diffs"]
    tied = [n for n, d in diffs.items() if d["lo"] <= 0 <= d["hi"]]
    quiet = not (summary.get("latency") or {}).get("under_load")
    pick = rows[min(tied, key=lambda n: cost_key(rows[n], quiet))]
    reasons = [_headline(pick, best, main, tied, rows)]
    if best["metrics"][main]["mean"] == 0:
        reasons.insert(0, f"No strategy got a single case right on {main}: the pick is only "
                          "the cheapest of equals; look at the reasons below before adopting it.")
    if not quiet:
        reasons.append(summary["latency"]["note"])
    reasons += _format_reasons(rows)
    reasons += _fact_reasons(rows, main, diffs)
    reasons += _retrieval_reasons(rows)
    for f in forgetting or []:
        if f["flagged"]:
            who = next((r["name"] for r in rows.values() if r.get("model") == f["model"]),
                       f["model"])
            reasons.append(f"Forgetting: {who} " + "; ".join(f["reasons"]) + ".")
    return {"recommendation": pick["name"], "best": best["name"], "tied": sorted(tied),
            "verdict": _verdict(pick), "reasons": reasons}


def _verdict(pick: dict[str, Any]) -> str:
    return {"base": "Neither: the prompt alone does as well as anything measured.",
            "few_shot": "Prompting: a few examples in the prompt do as well as anything measured.",
            "rag": "RAG: the model needs facts it lacks, not a new behaviour.",
            "fine_tuned": "Fine-tune: the model needs a behaviour (format, style), not facts.",
            "fine_tuned_rag": "Both: fine-tune for the behaviour and retrieve for the facts.",
            }.get(pick["type"], pick["type"])


def _headline(pick, best, main, tied, rows) -> str:
    b = best["metrics"][main]
    s = (f"{best['name']} scores best on {main}: {b['mean']:.2f} "
         f"(95% interval {b['lo']:.2f}-{b['hi']:.2f}, {b['n']} cases).")
    if pick["name"] == best["name"]:
        others = [n for n in tied if n != best["name"]]
        if others:
            s += (f" {', '.join(others)} {'is' if len(others) == 1 else 'are'} within its "
                  "interval but cost more (training, tokens or latency), so it stays the pick.")
        else:
            s += " No other strategy is within its 95% interval."
        return s
    pc, bc = pick["cost"], best["cost"]
    why = []
    if best.get("fine_tuned") and not pick.get("fine_tuned"):
        why.append("needs no training")
    dt = ((bc.get("prompt_tokens") or 0) + (bc.get("completion_tokens") or 0)
          - (pc.get("prompt_tokens") or 0) - (pc.get("completion_tokens") or 0))
    if dt > 0:
        why.append(f"uses {dt:.0f} fewer tokens per request")
    if not why:
        why.append("answers faster")
    pm = pick["metrics"][main]
    return (s + f" {pick['name']} ({pm['mean']:.2f}) is within that interval of it and "
            f"{' and '.join(why)}: a tie broken by cost.")


def _first(rows, names) -> str | None:
    return next((m for m in names if any(m in r["metrics"] for r in rows.values())), None)


def _by_type(rows, type_) -> list[dict[str, Any]]:
    return [r for r in rows.values() if r["type"] == type_]


def _format_measure(rows) -> tuple[str, Any] | None:
    """How well each strategy keeps the expected form: JSON (schema) validity, else the share of
    answers that name a label of the label set."""
    metric = _first(rows, FORMAT_METRICS)
    if metric is not None:
        label = "valid JSON" if metric == "json_valid" else "schema-valid JSON"
        return label, lambda r: _m(r, metric)
    if _first(rows, ("label_accuracy",)):
        def parsable(r):
            v = r["metrics"].get("label_accuracy")
            if not v or not v["n"]:
                return None
            return 1 - v["notes"].get("unparsable", 0) / v["n"]
        return "an answer from the label set", parsable
    return None


def _format_reasons(rows) -> list[str]:
    measure = _format_measure(rows)
    base = (_by_type(rows, "base") or [None])[0]
    if measure is None or base is None or measure[1](base) is None:
        return []
    label, fmt_of = measure
    b = fmt_of(base)
    tuned = [r for r in rows.values() if r.get("fine_tuned") and fmt_of(r) is not None]
    if b >= 0.9:
        return [f"The base model already answers in the right format ({label} on {_fmt(b)} "
                "of cases): fine-tuning is not needed for format."]
    out = f"The base model answers in the wrong format ({label} on {_fmt(b)} of cases)"
    if tuned:
        t = max(tuned, key=fmt_of)
        out += f"; fine-tuning fixed the format on {_fmt(fmt_of(t))} ({t['name']})"
    fs = (_by_type(rows, "few_shot") or [None])[0]
    if fs is not None and fmt_of(fs) is not None:
        out += f"; few-shot examples reached {_fmt(fmt_of(fs))}"
    return [out + "."]


def _fact_reasons(rows, main, diffs) -> list[str]:
    metric = _first(rows, FACT_METRICS)
    out = []
    for plain, grounded in (("base", "rag"), ("fine_tuned", "fine_tuned_rag")):
        for g in _by_type(rows, grounded):
            p = next((r for r in _by_type(rows, plain)
                      if plain == "base" or r.get("model") == g.get("model")), None)
            if p is None:
                continue
            if metric and _m(g, metric) is not None and _m(p, metric) is not None:
                gv, pv = _m(g, metric), _m(p, metric)
                if gv - pv >= 0.1:
                    out.append(f"Retrieval supplied facts the model lacks: {g['name']} holds the "
                               f"required facts on {_fmt(gv)} of cases, {p['name']} on "
                               f"{_fmt(pv)}.")
                else:
                    out.append(f"Retrieval added no facts: {g['name']} holds the required facts "
                               f"on {_fmt(gv)} of cases, {p['name']} on {_fmt(pv)}.")
            gm, pm = _m(g, main), _m(p, main)
            if gm is None or pm is None:
                continue
            if abs(gm - pm) < 0.05:
                out.append(f"RAG added no {main}: {g['name']} {gm:.2f} vs {p['name']} {pm:.2f}.")
            else:
                out.append(f"RAG {'raised' if gm > pm else 'lowered'} {main} from {pm:.2f} "
                           f"({p['name']}) to {gm:.2f} ({g['name']}).")
    return out


def _retrieval_reasons(rows) -> list[str]:
    out = []
    for r in rows.values():
        rec = _m(r, "retrieval_recall")
        if rec is not None and rec < 0.8:
            out.append(f"Retrieval found the gold source on only {_fmt(rec)} of cases for "
                       f"{r['name']}: better documents, chunking or k would help RAG first.")
    return out
