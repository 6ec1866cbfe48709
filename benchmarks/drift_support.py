"""Drift on the shipped support example (issue 19, item 5): ``afinar.evals.drift.monitor`` on a
query set made of the held-out test tickets (examples/support/test.jsonl) and on one made of
off-topic questions, both against the example's training tickets (train.jsonl) and its knowledge
base (examples/support/kb, built here in a private AFINAR_HOME). No chat model runs: the
embedded MiniLM embeds the questions and the knowledge base answers the retrieval side.

    .venv/bin/python benchmarks/drift_support.py [--permutations 999] [--home DIR]

Prints, for each query set, the nearest-neighbour test against the training data (mean cosine
distances, effect, p-value, share outside the training data's own 95th percentile, flagged or
not), the top-1 retrieval cosine against the training questions' and the share of questions the
knowledge base gives no source for, and the recommendations; ``--json`` the two reports.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_home import private_home  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = ROOT / "examples" / "support"
OFF_TOPIC = [
    "What is the capital of Australia?", "How do I make a sourdough starter?",
    "Who painted the ceiling of the Sistine Chapel?", "How many moons does Jupiter have?",
    "What is a good recipe for lentil soup?", "How do I train for a first marathon?",
    "Explain how photosynthesis works.", "What year did the Berlin Wall fall?",
    "Which novels did Jane Austen write?", "How do I repot an orchid?",
    "What causes the northern lights?", "How long should I boil an egg for a soft yolk?",
    "What is the offside rule in football?", "Recommend a board game for four players.",
    "How do volcanoes form?", "What is the difference between a violin and a viola?",
    "How can I improve my chess openings?", "What should I pack for a week of hiking?",
    "How do vaccines train the immune system?", "Translate 'thank you' into Japanese.",
    "Why is the sky blue?", "What is the tallest building in the world?",
    "How do I knit a scarf?", "Which wine goes with grilled salmon?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--permutations", type=int, default=999)
    ap.add_argument("--home", default=None, help="AFINAR_HOME to use (default: a temporary one)")
    ap.add_argument("--json", action="store_true", help="Print the two reports as JSON.")
    args = ap.parse_args()
    private_home(args.home, "afinar-drift-")

    from afinar.evals.drift import monitor
    from afinar.rag.kb import KnowledgeBases

    t0 = time.perf_counter()
    kbs = KnowledgeBases()
    kbs.create("acme-support")
    kbs.add("acme-support", sorted((SUPPORT / "kb").glob("*.md")))
    work = Path(tempfile.mkdtemp(prefix="afinar-drift-q-"))
    atexit.register(shutil.rmtree, work, True)
    off = work / "off_topic.txt"
    off.write_text("\n".join(OFF_TOPIC) + "\n")
    cfg = work / "drift.yaml"
    cfg.write_text(f"permutations: {args.permutations}\n")
    sets = {"test tickets": SUPPORT / "test.jsonl", "off-topic": off}
    reports = {}
    for name, queries in sets.items():
        reports[name] = monitor("smollm2-135m-instruct", queries=queries,
                                train=SUPPORT / "train.jsonl", kb="acme-support",
                                config=cfg).to_dict()
    seconds = time.perf_counter() - t0
    if args.json:
        print(json.dumps(reports, indent=1))
        return
    print(f"drift on examples/support: {len(OFF_TOPIC)} off-topic questions vs the test "
          f"tickets, against train.jsonl and kb/ ({seconds:.0f} s, {args.permutations} "
          "permutations)")
    for name, r in reports.items():
        t, ret, ab = r["training"], r["retrieval"], r["abstention"]
        print(f"\n{name} ({t['n_queries']} questions vs {t['n_reference']} training "
              "questions)")
        print(f"  nearest training question: mean cosine distance {t['query_mean']:.3f} vs "
              f"{t['reference_mean']:.3f} (training leave-one-out): +{t['effect']:.3f}, "
              f"p={t['p_value']:.3g}, {t['outside_share']:.0%} outside the 95th percentile "
              f"({t['reference_p95']:.3f}); drift flagged: {'yes' if t['drifted'] else 'no'}")
        print(f"  top-1 retrieval cosine: median {ret['recent_median']:.3f} vs "
              f"{ret['baseline_median']:.3f} ({ret['baseline']}), p={ret['p_value']:.3g}; "
              f"falling: {'yes' if ret['falling'] else 'no'}")
        print(f"  no source in the knowledge base: {ab['share']:.0%} of {ab['n']}")
        recs = "; ".join(a["action"] for a in r["recommendations"]) or "none"
        print(f"  recommendations: {recs}")


if __name__ == "__main__":
    main()
