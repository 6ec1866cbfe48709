"""Small data, every hyperparameter ``auto``: does a 37-example fine-tune learn a constant field?

The task of issue 11: answers are JSON with an input-dependent field (the city named in a
sentence) and a constant one (``"source": "atlas-v2"``). 37 training conversations, 8 held-out
sentences with cities and phrasings the training set does not have. The embedded model is
fine-tuned with LoRA and every hyperparameter left ``auto``, through afinar's services as
``afinar tune create`` uses them (the file store, ``Jobs.create``, the worker loop), then answers
the held-out inputs greedily. Counted: answers that parse as JSON with exactly the two keys and the
constant (``format``), and of those, the right city (``city``). The base model is measured the
same way first.

    .venv/bin/python benchmarks/small_data_auto.py [--model smollm2-135m-instruct]
        [--epochs auto] [--home DIR (default: a temporary one, removed after)] [--json]

Target: 8/8 held-out answers (or close) with the full format, constant included. Before the
small-data rules (auto batch size >= 8) the same task trained 20 steps and gave 0/8.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from bench_home import private_home, train_job

CONSTANT = {"source": "atlas-v2"}
TRAIN_CITIES = ["Lisbon", "Porto", "Madrid", "Seville", "Paris", "Lyon", "Berlin", "Munich",
                "Vienna", "Prague", "Warsaw", "Krakow", "Oslo", "Bergen", "Dublin", "Cork",
                "Rome", "Milan", "Naples", "Athens", "Zurich", "Geneva", "Brussels", "Ghent",
                "Amsterdam", "Utrecht", "Copenhagen", "Helsinki", "Tallinn", "Riga", "Vilnius",
                "Budapest", "Bucharest", "Sofia", "Zagreb", "Ljubljana", "Valencia"]
HELD_OUT_CITIES = ["Toronto", "Nairobi", "Osaka", "Lima", "Denver", "Cairo", "Perth", "Hanoi"]
TRAIN_TEMPLATES = [
    "Our order shipped from {c} on Monday.", "The conference this year takes place in {c}.",
    "She moved to {c} for a new job.", "The museum in {c} opens at nine.",
    "Flights to {c} were delayed by fog.", "We opened a new office in {c} last spring.",
    "The train from {c} arrives at noon.", "Rents in {c} rose again this quarter.",
]
HELD_OUT_TEMPLATES = [
    "A storm closed the port of {c} yesterday.", "My cousin studies engineering in {c}.",
    "The festival in {c} sold out within hours.", "Our supplier is based in {c}.",
]
INSTRUCTION = "Extract the city as JSON: "


def answer(city: str) -> str:
    return json.dumps({"city": city, **CONSTANT})


def datasets() -> tuple[list[dict], list[tuple[str, str]]]:
    rnd = random.Random(11)
    train = [{"messages": [
        {"role": "user", "content": INSTRUCTION + rnd.choice(TRAIN_TEMPLATES).format(c=c)},
        {"role": "assistant", "content": answer(c)}]} for c in TRAIN_CITIES]
    held = [(INSTRUCTION + HELD_OUT_TEMPLATES[i % len(HELD_OUT_TEMPLATES)].format(c=c), c)
            for i, c in enumerate(HELD_OUT_CITIES)]
    return train, held


def score(text: str, city: str) -> tuple[bool, bool]:
    """(full format with the constant, right city)."""
    try:
        obj = json.loads(text.strip())
    except ValueError:
        return False, False
    ok = isinstance(obj, dict) and set(obj) == {"city", "source"} and obj["source"] == "atlas-v2"
    return ok, ok and obj.get("city") == city


def answers(model_id: str, held: list[tuple[str, str]]) -> list[dict]:
    from afinar.models import Catalog, Generator, SamplingParams, load_causal_lm

    lm = load_causal_lm(Catalog().get(model_id))
    out = []
    for prompt, city in held:
        r = Generator(lm).chat([{"role": "user", "content": prompt}],
                               SamplingParams(temperature=0.0, max_tokens=48, seed=0))
        fmt, right = score(r.text, city)
        out.append({"prompt": prompt, "answer": r.text, "format": fmt, "city": right})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--epochs", default="auto", help="n_epochs (default auto)")
    ap.add_argument("--home", help="AFINAR_HOME to use (default: a fresh temporary one)")
    ap.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = ap.parse_args()
    home = private_home(args.home, "afinar-bench-small-")

    from afinar.store.files import Files
    from afinar.tuning import Jobs

    t_start = time.perf_counter()
    train, held = datasets()
    data = home / "constant-field.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in train))
    base = answers(args.model, held)

    epochs = args.epochs if args.epochs == "auto" else int(args.epochs)
    rec = Files().create_from_path(data, "fine-tune")
    job = Jobs().create(model=args.model, training_file=rec.id, method={"type": "lora"},
                        hyperparameters={"n_epochs": epochs, "batch_size": "auto",
                                         "learning_rate_multiplier": "auto"}, seed=0)
    job, train_s = train_job(job)  # what `afinar worker` runs
    events = Jobs().events(job.id)
    losses = [e.data["train_loss"] for e in events if e.type == "metrics"]
    tuned = answers(job.fine_tuned_model, held)
    res = job.hyperparameters["resolved"]
    result = {
        "model": args.model, "train_examples": len(train), "held_out": len(held),
        "hyperparameters": {k: res[k] for k in ("n_epochs", "batch_size", "learning_rate",
                                                "total_steps")},
        "first_loss": round(sum(losses[:10]) / max(1, len(losses[:10])), 4),
        "final_loss": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4),
        "warnings": [e.message for e in events if e.level == "warn"],
        "base": {"format": sum(a["format"] for a in base), "city": sum(a["city"] for a in base)},
        "tuned": {"format": sum(a["format"] for a in tuned),
                  "city": sum(a["city"] for a in tuned)},
        "train_seconds": round(train_s, 1),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "answers": tuned,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    hp = result["hyperparameters"]
    print(f"{args.model}, LoRA, all auto: {len(train)} examples -> batch {hp['batch_size']}, "
          f"{hp['n_epochs']} epochs, {hp['total_steps']} steps, lr {hp['learning_rate']:g}")
    print(f"training loss (mean of 10 steps): {result['first_loss']} -> {result['final_loss']}")
    for w in result["warnings"]:
        print(f"  warn: {w}")
    n = len(held)
    print(f"held-out answers with the full format and the constant: base "
          f"{result['base']['format']}/{n}, fine-tuned {result['tuned']['format']}/{n} "
          f"(right city: base {result['base']['city']}/{n}, fine-tuned "
          f"{result['tuned']['city']}/{n})")
    for a in tuned:
        print(f"  {'ok ' if a['format'] else 'BAD'} {a['answer'][:70]}")
    print(f"training {result['train_seconds']} s, wall {result['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
