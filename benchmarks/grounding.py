"""Which grounded prompt layout makes the embedded model read its sources?

Counterfactual questions: SQuAD passages (``../shared/datasets/squad/qa.jsonl``, evaluation
only) whose answer span is replaced by another entity of the same kind (a year by another year,
a number by another number, a name by another question's name answer), so that only reading the
passage gives the answer the grader accepts. Retrieval is made right on purpose: the edited
passage is source [1], followed by two other passages as distractors.

Every layout of ``afinar.rag.layouts.LAYOUTS`` answers every question at temperature 0 with the
embedded chat model, and so does the closed-book prompt (no sources). An answer is "from the
sources" when it contains the substituted entity, "from memory" when it contains the original
one. Intervals: Wilson 95%.

Usage: ``python benchmarks/grounding.py [--n 60] [--max-tokens 48] [--layouts a,b]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from abstention import wilson  # noqa: E402  (one Wilson interval for the benchmarks)

QA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "squad" / "qa.jsonl"
_YEAR = re.compile(r"^(1[5-9]\d\d|20[0-2]\d)$")
_NUMBER = re.compile(r"^\d{1,3}(,\d{3})*$")
_NAME = re.compile(r"^[A-Z][a-z]+(?: [A-Z][a-z]+){0,2}$")


def kind(answer: str) -> str | None:
    if _YEAR.match(answer):
        return "year"
    if _NUMBER.match(answer):
        return "number"
    if _NAME.match(answer):
        return "name"
    return None


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^0-9a-z]+", " ", text.lower())).strip()


def contains(text: str, span: str) -> bool:
    return f" {norm(span)} " in f" {norm(text)} "


def counterfactuals(n: int, seed: int = 0) -> list[dict]:
    """``n`` questions whose passage holds a replaced answer (see the module docstring)."""
    rows = [json.loads(line) for line in QA.read_text().splitlines()]
    rng = random.Random(seed)
    names = sorted({r["answer"] for r in rows if kind(r["answer"]) == "name"})
    contexts = sorted({r["context"] for r in rows})
    rng.shuffle(rows)
    out, seen = [], set()
    for r in rows:
        k, a, ctx = kind(r["answer"]), r["answer"], r["context"]
        if k is None or ctx.count(a) != 1 or ctx in seen:
            continue
        if k == "year":
            new = str(int(a) + rng.choice([-1, 1]) * rng.randint(7, 40))
        elif k == "number":
            v = int(a.replace(",", ""))
            new = f"{max(2, v * rng.choice([2, 3]) + rng.randint(1, 9)):,}"
        else:
            new = rng.choice([x for x in names if x not in ctx and norm(a) not in norm(x)
                              and norm(x) not in norm(a)])
        if contains(ctx.replace(a, ""), new):
            continue
        others = rng.sample([c for c in contexts if c != ctx], 2)
        out.append({"question": r["question"], "original": a, "answer": new, "kind": k,
                    "sources": [("passage-1.txt", ctx.replace(a, new)),
                                ("passage-2.txt", others[0]), ("passage-3.txt", others[1])]})
        seen.add(ctx)
        if len(out) == n:
            break
    return out


def main() -> None:
    from afinar.models import Catalog, Generator, SamplingParams, load_causal_lm
    from afinar.rag.layouts import DEFAULT_LAYOUT, LAYOUTS
    from afinar.settings import get_settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--layouts", default=None, help="comma-separated (default: all)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=None, help="write every answer here (JSONL)")
    args = ap.parse_args()
    if not QA.exists():
        raise SystemExit(f"needs {QA} (the shared SQuAD subset)")
    items = counterfactuals(args.n)
    lm = load_causal_lm(Catalog().get(args.model or get_settings().default_model))
    gen = Generator(lm)
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    layouts = args.layouts.split(",") if args.layouts else ["closed_book", *LAYOUTS.names()]
    log = open(args.out, "w") if args.out else None
    print(f"{len(items)} counterfactual questions ({', '.join(sorted({i['kind'] for i in items}))}"
          f"), model {lm.info.id if hasattr(lm, 'info') else args.model}, temperature 0, "
          f"max_tokens {args.max_tokens}")
    print(f"{'layout':<24}{'from sources':>16}{'95% CI':>14}{'memory':>8}{'tokens':>8}{'s':>6}")
    for name in layouts:
        t0, good, memory, tokens = time.time(), 0, 0, 0
        for it in items:
            msgs = [{"role": "user", "content": it["question"]}]
            if name != "closed_book":
                msgs = LAYOUTS.get(name)(msgs, it["sources"], None)
            r = gen.chat(msgs, params)
            ok, mem = contains(r.text, it["answer"]), contains(r.text, it["original"])
            good += ok
            memory += mem and not ok
            tokens += r.prompt_tokens
            if log:
                log.write(json.dumps({"layout": name, "question": it["question"],
                                      "answer": it["answer"], "original": it["original"],
                                      "text": r.text, "from_sources": ok}) + "\n")
        lo, hi = wilson(good, len(items))
        mark = " *" if name == DEFAULT_LAYOUT else ""
        print(f"{name + mark:<24}{good:>7}/{len(items):<3} {good / len(items):>4.0%}"
              f"{lo:>7.0%}-{hi:<5.0%}{memory:>7}{tokens // len(items):>8}"
              f"{time.time() - t0:>6.0f}", flush=True)
    print("* the default layout (afinar.rag.layouts.DEFAULT_LAYOUT)")


if __name__ == "__main__":
    main()
