"""Per-token cost of constrained JSON decoding (``afinar.models.constrained``, llguidance) on a
model's tokenizer, against the cost of one decoding step of that model.

    .venv/bin/python benchmarks/constrained_json.py [--model smollm2-135m-instruct]

The processor is driven exactly as ``generate`` drives it (ids so far, a row of logits) along the
tokens of a valid reply for a nested schema (enum, integer, array, nested object); the mask it
returns must allow every token of that reply.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"},
    "colour": {"enum": ["red", "green", "blue"]},
    "tags": {"type": "array", "items": {"type": "string"}},
    "address": {"type": "object", "properties": {"city": {"type": "string"},
                                                 "zip": {"type": "string"}},
                "required": ["city", "zip"], "additionalProperties": False}},
    "required": ["name", "age", "colour", "tags", "address"], "additionalProperties": False}
VALUE = {"name": "Ada Lovelace", "age": 36, "colour": "blue", "tags": ["math", "poetry"],
         "address": {"city": "London", "zip": "W1"}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ.setdefault("AFINAR_HOME", home)
        import torch

        from afinar.models import Catalog, Generator, SamplingParams, load_causal_lm
        from afinar.models.constrained import JsonConstraint
        from afinar.models.templates import end_of_turn_ids

        lm = load_causal_lm(Catalog().get(args.model))
        tok, vocab = lm.tokenizer, lm.model.config.vocab_size
        eos = end_of_turn_ids(tok, lm.model.generation_config)
        t0 = time.perf_counter()
        JsonConstraint(tok, {"type": "object"}, eos)
        t1 = time.perf_counter()
        constraint = JsonConstraint(tok, SCHEMA, eos)
        t2 = time.perf_counter()
        ids = tok(json.dumps(VALUE), add_special_tokens=False)["input_ids"] + [eos[0]]
        per_token = []
        for _ in range(args.repeats):
            proc = constraint.processor(0)
            for k, t in enumerate(ids):
                scores, so_far = torch.zeros(1, vocab), torch.tensor([ids[:k]], dtype=torch.long)
                a = time.perf_counter()
                out = proc(so_far, scores)
                per_token.append(time.perf_counter() - a)
                assert out[0, t] == 0, f"the mask refused token {k} ({tok.decode([t])!r})"
        gen = Generator(lm)
        p = SamplingParams(temperature=0, max_tokens=32)
        msgs = [{"role": "user", "content": "Describe a person."}]
        gen.chat(msgs, p)  # warm up
        a = time.perf_counter()
        r = gen.chat(msgs, p)
        step = (time.perf_counter() - a) / max(1, r.completion_tokens)
    ms = statistics.mean(per_token) * 1e3
    print(f"model {args.model}, vocabulary {vocab}, reply {len(ids)} tokens x {args.repeats}")
    print(f"tokenizer bridge + first schema: {t1 - t0:.3f} s (once per tokenizer)")
    print(f"compile a schema: {(t2 - t1) * 1e3:.1f} ms (cached per tokenizer and schema)")
    print(f"mask per token: mean {ms:.3f} ms, median "
          f"{statistics.median(per_token) * 1e3:.3f} ms, max {max(per_token) * 1e3:.3f} ms")
    print(f"one decoding step of the model: {step * 1e3:.1f} ms -> overhead "
          f"{100 * ms / (step * 1e3):.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
