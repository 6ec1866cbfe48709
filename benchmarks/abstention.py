"""Calibrated abstention on the Debian FAQ: precision and recall of "the sources do not hold the
answer", for the threshold learned per base (``afinar kb calibrate``) against a fixed cosine
(0.3, ``rag.answer.THRESHOLD``) and against no abstention.

A base is built from the FAQ's HTML chapters of one parity only (the even ones by default). The
questions are the FAQ's own numbered questions (its table of contents, ``debian-faq.txt``):
those of the ingested chapters are answerable; those of the left-out chapters are on-topic but
unanswerable; off-topic questions are SQuAD's (``--squad``). The threshold is learned the way
``kb calibrate`` learns it by default (synthetic queries from sampled chunks against the
packaged general questions), so no benchmark question is seen while learning. Decisions are
retrieval-only (``rag.answer.sources_for``: what ``ask`` grounds on; an empty list is an
abstention), so no model generates. Intervals are Wilson 95%.

    .venv/bin/python benchmarks/abstention.py [--limit N] [--chapters even|odd]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FAQ_HTML = SHARED / "corpora/debian-faq-html"
FAQ_TXT = SHARED / "corpora/debian-faq.txt"
SQUAD = SHARED / "datasets/squad"
_QUESTION = re.compile(r"^ +(\d+)\.(\d+)\. (.+?)\s*$")


def faq_questions(txt: Path = FAQ_TXT) -> list[tuple[int, str, str]]:
    """(chapter, "N.M", question) from the FAQ's table of contents (112 questions)."""
    out, seen = [], set()
    for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _QUESTION.match(line)
        if m and (m.group(1), m.group(2)) not in seen:
            seen.add((m.group(1), m.group(2)))
            out.append((int(m.group(1)), f"{m.group(1)}.{m.group(2)}", m.group(3)))
    return out


def chapters(folder: Path = FAQ_HTML) -> dict[int, Path]:
    """Chapter number -> its HTML page (the index page has none)."""
    out = {}
    for p in sorted(folder.glob("*.html")):
        m = re.search(r'<h1 class="title">.*?Chapter\s(\d+)\.',
                      p.read_text(encoding="utf-8", errors="replace"), re.S)
        if m:
            out[int(m.group(1))] = p
    return out


def squad_questions(n: int, folder: Path = SQUAD) -> list[str]:
    qs = [json.loads(x)["text"] for x in (folder / "queries.jsonl").read_text().splitlines()]
    return random.Random(0).sample(qs, min(n, len(qs)))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def report(name: str, abstained: list[bool], should: list[bool]) -> str:
    tp = sum(a and s for a, s in zip(abstained, should))
    n_abs, n_should = sum(abstained), sum(should)
    p_lo, p_hi = wilson(tp, n_abs)
    r_lo, r_hi = wilson(tp, n_should)
    prec = f"{tp / n_abs:.2f} [{p_lo:.2f},{p_hi:.2f}]" if n_abs else "  -  (none)"
    return (f"{name:14} {n_abs:4d} {prec:>18} {tp / n_should:5.2f} [{r_lo:.2f},{r_hi:.2f}]"
            if n_should else f"{name:14} {n_abs:4d} {prec:>18}    -")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="At most N questions of each kind.")
    ap.add_argument("--chapters", choices=("even", "odd"), default="even",
                    help="Which chapters the base holds.")
    ap.add_argument("--squad", type=int, default=60, help="Off-topic SQuAD questions.")
    ap.add_argument("--sample", type=int, default=50, help="Synthetic calibration queries.")
    ap.add_argument("--constant", type=float, default=0.3)
    a = ap.parse_args()
    if not FAQ_TXT.exists() or not FAQ_HTML.is_dir():
        print(f"no Debian FAQ under {SHARED / 'corpora'}")
        return 1
    with tempfile.TemporaryDirectory() as home:
        os.environ["AFINAR_HOME"] = home
        from afinar.evals.fusion_tuning import calibrate_abstention
        from afinar.rag.answer import sources_for
        from afinar.rag.kb import KnowledgeBases

        parity = 0 if a.chapters == "even" else 1
        pages = chapters()
        kept = sorted(c for c in pages if c % 2 == parity)
        kbs = KnowledgeBases()
        kbs.create("faq")
        t = time.perf_counter()
        r = kbs.add("faq", [pages[c] for c in kept])
        print(f"base: chapters {','.join(map(str, kept))} of the Debian FAQ: {r.chunks} chunks "
              f"in {time.perf_counter() - t:.0f} s")
        qs = faq_questions()
        answerable = [q for c, _, q in qs if c in kept]
        unanswerable = [q for c, _, q in qs if c in pages and c not in kept]
        off = squad_questions(a.squad) if (SQUAD / "queries.jsonl").exists() else []
        if a.limit:
            answerable, unanswerable, off = (x[: a.limit] for x in (answerable, unanswerable,
                                                                     off))
        t = time.perf_counter()
        cal = calibrate_abstention(kbs, "faq", sample=a.sample)
        print(f"learned threshold {cal['threshold']:.3f} in {time.perf_counter() - t:.0f} s "
              f"({cal['positives']} synthetic queries, median best cosine "
              f"{cal['positive_median']:.3f}; {cal['negatives']} general questions, "
              f"{cal['negative_median']:.3f})")
        questions = [*answerable, *unanswerable, *off]
        should = [False] * len(answerable) + [True] * (len(unanswerable) + len(off))
        print(f"questions: {len(answerable)} answerable, {len(unanswerable)} on-topic "
              f"unanswerable (left-out chapters), {len(off)} off-topic (SQuAD)")
        rules = {"learned": None, f"constant {a.constant:g}": a.constant, "no abstention": 0.0}
        results = {}
        t = time.perf_counter()
        for name, thr in rules.items():
            results[name] = [not sources_for(kbs, "faq", q, groups=None, score_threshold=thr)
                             for q in questions]
        print(f"decisions: {len(questions) * len(rules)} in {time.perf_counter() - t:.0f} s")
        print("\nabstention: precision and recall, Wilson 95%")
        print(f"{'rule':14} {'abst':>4} {'precision':>18} {'recall':>17}")
        for name, abst in results.items():
            print(report(name, abst, should))
        n_un = len(unanswerable)
        print("\nrecall by kind of unanswerable question (on-topic | off-topic):")
        for name, abst in results.items():
            on = abst[len(answerable): len(answerable) + n_un]
            of = abst[len(answerable) + n_un:]
            print(f"{name:14} {sum(on) / max(len(on), 1):.2f} | {sum(of) / max(len(of), 1):.2f}"
                  f"   answerable wrongly abstained: {sum(abst[:len(answerable)])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
