"""Reinforcement fine-tuning (GRPO) against a programmable reward: does the mean reward on
held-out prompts rise above the base model's 95% interval?

The task: "In at most N words, say something about TOPIC, using the word KEYWORD". The reward is
a ``python`` grader (OpenAI's grader object, run by ``afinar.graders`` in its sandbox): 0.5 when
the answer has at most N words, plus 0.5 when it contains the keyword (case-insensitive). The
training prompts and the held-out prompts share no topic. The embedded model answers the
held-out prompts greedily (``max_tokens`` = the training's ``max_completion_length``) before and
after a GRPO job run through afinar's services as ``afinar tune create --method grpo`` runs it
(the file store, ``Jobs.create``, the worker loop). Printed: each model's mean reward with a 95%
percentile-bootstrap interval over the held-out prompts, and whether the tuned mean lies above
the base's interval.

    .venv/bin/python benchmarks/grpo_reward.py [--model smollm2-135m-instruct] [--train 24]
        [--held-out 24] [--generations 4] [--epochs 2] [--batch-size 4] [--lr-multiplier 4]
        [--max-words 12] [--max-completion 32] [--home DIR] [--json] [--quick]

The defaults are sized for about ten minutes on two CPU cores (24 prompts x 4 completions x 2
epochs = 12 optimizer steps); ``--quick`` is a smoke run (10 prompts, 2 completions, 8 tokens,
one epoch of 2 steps, 4 held-out prompts) that checks the pipeline, not the effect.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from bench_home import private_home, train_job

TOPICS = ["the ocean", "coffee", "bicycles", "winter", "libraries", "volcanoes", "bread",
          "trains", "owls", "gardens", "the moon", "chess", "rivers", "honey", "castles",
          "deserts", "violins", "lighthouses", "tea", "mountains", "bridges", "penguins",
          "forests", "clocks", "islands", "maps", "cheese", "kites", "glaciers", "markets",
          "rainbows", "sailing", "museums", "wolves", "lanterns", "caves", "orchards",
          "telescopes", "harbors", "meadows", "pottery", "storms", "canals", "bees", "paper",
          "snow", "jazz", "tigers"]
KEYWORDS = ["blue", "quiet", "golden", "ancient", "bright", "gentle", "wild", "simple"]
GRADER_SOURCE = '''
def grade(sample, item):
    text = sample["output_text"]
    short = len(text.split()) <= item["max_words"]
    used = item["keyword"].lower() in text.lower()
    return 0.5 * short + 0.5 * used
'''
GRADER = {"type": "python", "name": "short_with_keyword", "source": GRADER_SOURCE}


def prompts(topics: list[str], max_words: int, seed: int) -> list[dict]:
    """RFT rows: the prompt, and what the grader reads (max_words, keyword)."""
    rnd = random.Random(seed)
    rows = []
    for t in topics:
        kw = rnd.choice(KEYWORDS)
        rows.append({"messages": [{"role": "user", "content": (
            f"In at most {max_words} words, say something about {t}, using the word "
            f"'{kw}'.")}], "max_words": max_words, "keyword": kw})
    return rows


def rewards(model_id: str, rows: list[dict], max_tokens: int) -> tuple[list[float], list[str]]:
    """Greedy answers of ``model_id`` to ``rows`` and their rewards from the same grader."""
    from afinar.graders import load_grader, sample_from_text
    from afinar.models import Catalog, Generator, SamplingParams, load_causal_lm

    lm = load_causal_lm(Catalog().get(model_id))
    texts = [Generator(lm).chat(r["messages"], SamplingParams(
        temperature=0.0, max_tokens=max_tokens, seed=0)).text for r in rows]
    items = [{k: v for k, v in r.items() if k != "messages"} for r in rows]
    graded = load_grader(GRADER).grade_many([sample_from_text(t) for t in texts], items)
    return [g.score for g in graded], texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--train", type=int, default=24, help="training prompts (>= 10)")
    ap.add_argument("--held-out", type=int, default=24, help="held-out prompts")
    ap.add_argument("--generations", type=int, default=4, help="num_generations (group size)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4, help="prompts per step")
    ap.add_argument("--lr-multiplier", type=float, default=4.0, help="of GRPO's base 5e-5")
    ap.add_argument("--max-words", type=int, default=12)
    ap.add_argument("--max-completion", type=int, default=32, help="max_completion_length")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--home", help="AFINAR_HOME to use (default: a fresh temporary one)")
    ap.add_argument("--json", action="store_true", help="print the full result as JSON")
    ap.add_argument("--quick", action="store_true", help="a smoke run with tiny sizes")
    args = ap.parse_args()
    if args.quick:
        args.train, args.held_out, args.generations = 10, 4, 2
        args.epochs, args.batch_size, args.max_completion = 1, 5, 8
    if args.train < 10 or args.train + args.held_out > len(TOPICS):
        ap.error(f"--train must be >= 10 and --train + --held-out <= {len(TOPICS)}")
    home = private_home(args.home, "afinar-bench-grpo-")

    from afinar.evals.metrics.base import bootstrap_ci
    from afinar.store.files import Files
    from afinar.tuning import Jobs

    t_start = time.perf_counter()
    topics = list(TOPICS)
    random.Random(args.seed).shuffle(topics)
    train = prompts(topics[:args.train], args.max_words, args.seed)
    held = prompts(topics[args.train:args.train + args.held_out], args.max_words, args.seed + 1)
    base, base_texts = rewards(args.model, held, args.max_completion)

    data = home / "rft-train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in train))
    rec = Files().create_from_path(data, "fine-tune")
    job = Jobs().create(model=args.model, training_file=rec.id, seed=args.seed, method={
        "type": "grpo", "grpo": {"grader": GRADER, "num_generations": args.generations,
                                 "max_completion_length": args.max_completion}},
        hyperparameters={"n_epochs": args.epochs, "batch_size": args.batch_size,
                         "learning_rate_multiplier": args.lr_multiplier})
    job, train_s = train_job(job)  # what `afinar worker` runs
    steps = [e.data for e in Jobs().events(job.id) if e.type == "metrics"]
    tuned, tuned_texts = rewards(job.fine_tuned_model, held, args.max_completion)

    def summary(xs: list[float]) -> dict:
        lo, hi = bootstrap_ci(xs, seed=args.seed)
        return {"mean": round(sum(xs) / len(xs), 4), "ci95": [round(lo, 4), round(hi, 4)]}

    b, t = summary(base), summary(tuned)
    result = {
        "model": args.model, "train_prompts": len(train), "held_out": len(held),
        "num_generations": args.generations, "steps": len(steps),
        "train_mean_reward": [round(s["train_mean_reward"], 3) for s in steps],
        "base": b, "tuned": t, "above_base_interval": t["mean"] > b["ci95"][1],
        "train_seconds": round(train_s, 1), "wall_seconds": round(time.perf_counter() - t_start,
                                                                   1),
        "answers": [{"prompt": r["messages"][0]["content"], "base": bt, "tuned": tt}
                    for r, bt, tt in zip(held, base_texts, tuned_texts)],
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{args.model}, GRPO: {len(train)} prompts x {args.generations} completions, "
          f"{len(steps)} steps; reward = 0.5 (<= {args.max_words} words) + 0.5 (keyword)")
    print("train mean reward per step: " + " ".join(f"{x:.2f}"
                                                    for x in result["train_mean_reward"]))
    print(f"held-out mean reward ({len(held)} prompts, greedy): base {b['mean']:.3f} "
          f"[{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}], tuned {t['mean']:.3f} "
          f"[{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}]")
    print("tuned mean above the base's 95% interval: "
          + ("yes" if result["above_base_interval"] else "no"))
    print(f"training {result['train_seconds']} s, wall {result['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
