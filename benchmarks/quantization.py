"""What quantising a fine-tune costs and saves when it is served from its GGUF on the CPU by
llama.cpp (the engine's model class, ``LlamaCppModel``): per weight type, the file size, the peak
RSS of a process that loads it and answers, decoding tokens/s, and the quality on the fine-tune's
own validation set (mean validation loss on the gold answers, teacher-forced, and exact match of
the greedy answers), each with its ratio to f32 measured in the same run.

    .venv/bin/python benchmarks/quantization.py                 # trains the sarcasm LoRA first
    .venv/bin/python benchmarks/quantization.py --model ft:...  # a fine-tune of AFINAR_HOME's
    .venv/bin/python benchmarks/quantization.py --short         # minutes: a smoke run

Without ``--model`` a LoRA of the embedded SmolLM2 is trained (a real job) on the shared sarcasm
headlines (``--train-rows`` of train.jsonl, ``--valid-rows`` of test.jsonl as its validation
file) in a temporary AFINAR_HOME. The GGUFs are written by ``afinar models export``'s own code
(f32/f16/q8_0 by llama.cpp's converter, k-quants by its quantizer); each weight type is measured
in a child process of its own, so one's memory does not count against another's. One llama.cpp
thread (``AFINAR_LLAMA_THREADS``), as the engine runs; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sarcasm"
BASE = "smollm2-135m-instruct"


def _train(home: Path, rows: int, valid: int, epochs: int) -> str:
    from afinar.settings import get_settings
    from afinar.store.files import Files
    from afinar.tuning import Jobs
    from afinar.tuning.runner import JobRunner

    if not SHARED.is_dir():
        sys.exit(f"error: {SHARED} is absent: pass --model with a fine-tune of your own")
    train = random.Random(0).sample(SHARED.joinpath("train.jsonl").read_text().splitlines(), rows)
    test = random.Random(1).sample(SHARED.joinpath("test.jsonl").read_text().splitlines(), valid)
    (home / "train.jsonl").write_text("\n".join(train) + "\n")
    (home / "valid.jsonl").write_text("\n".join(test) + "\n")
    t = Files().create_from_path(home / "train.jsonl", "fine-tune")
    v = Files().create_from_path(home / "valid.jsonl", "fine-tune")
    job = Jobs().create(model=BASE, training_file=t.id, validation_file=v.id, seed=0,
                        hyperparameters={"n_epochs": epochs, "batch_size": 16,
                                         "learning_rate_multiplier": 4})
    print(f"training a LoRA of {BASE} on {rows} sarcasm headlines ({epochs} epochs)...",
          flush=True)
    t0 = time.perf_counter()
    status = JobRunner(Jobs().get(job.id), get_settings(), "bench").run()
    if status != "succeeded":
        sys.exit(f"error: training ended {status}: {Jobs().get(job.id).error}")
    print(f"  trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return Jobs().get(job.id).fine_tuned_model


def _split(tok, msgs) -> tuple[list[int], list[int]]:
    from afinar.models.export.verify import sample_ids

    prompt, full = sample_ids(tok, msgs[:-1]), sample_ids(tok, msgs, gen=False)
    return prompt, full[len(prompt):]


def _peak_rss() -> int:
    """This process's peak resident memory: Linux's VmHWM, which (unlike getrusage's
    ru_maxrss, kept across the exec from a big parent) belongs to this program alone."""
    import psutil

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return psutil.Process().memory_info().rss  # elsewhere: the RSS now, after the runs


def measure(gguf: Path, hf: Path, examples: list[list[dict]], tokens: int) -> dict:
    """In this (child) process: load ``gguf``, then validation loss, exact match, tokens/s."""
    import numpy as np
    import psutil
    import torch
    from transformers import AutoTokenizer

    from afinar.models.engines.llamacpp import LlamaCppModel, require_llama_cpp
    from afinar.models.gguf import no_extra_buffers
    from afinar.models.templates import end_of_turn_ids
    from afinar.settings import get_settings

    tok = AutoTokenizer.from_pretrained(str(hf))
    before = psutil.Process().memory_info().rss
    with no_extra_buffers():
        lm = LlamaCppModel(gguf, hf, get_settings(), n_ctx=512)
    eos = end_of_turn_ids(tok, lm.generation_config)
    nll = n = exact = 0
    for msgs in examples:
        prompt, target = _split(tok, msgs)
        llama_cpp = require_llama_cpp()  # a clean context, then the prompt
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(lm.llama._ctx.ctx), True)
        lm._decode(prompt, 0)
        for k, t in enumerate(target):
            logits = lm._logits().astype(np.float64)
            m = logits.max()
            nll += float(np.log(np.exp(logits - m).sum()) + m - logits[t])
            n += 1
            if k + 1 < len(target):
                lm._decode([t], len(prompt) + k)
        out = lm.generate(torch.tensor([prompt]), len(target) + 4, eos_token_id=eos)
        got = tok.decode(out[0, len(prompt):], skip_special_tokens=True).strip()
        exact += got == msgs[-1]["content"].strip()
    speeds = []
    for msgs in examples[:3]:  # decoding only: N tokens minus 1 token, no end-of-turn stop
        prompt = _split(tok, msgs)[0]
        t0 = time.perf_counter()
        lm.generate(torch.tensor([prompt]), 1)
        t1 = time.perf_counter()
        lm.generate(torch.tensor([prompt]), tokens)
        t2 = time.perf_counter()
        speeds.append((tokens - 1) / max((t2 - t1) - (t1 - t0), 1e-9))
    peak = _peak_rss()
    return {"loss": nll / max(n, 1), "exact": exact / max(len(examples), 1),
            "tok_s": sorted(speeds)[len(speeds) // 2], "peak_rss": peak,
            "model_rss": peak - before}


def _ratio(v: float, ref: float) -> str:
    return f"x{v / ref:.2f}" if ref else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a fine-tune with a job (default: train the sarcasm LoRA)")
    ap.add_argument("--quants", default="f32,f16,q8_0,q4_k_m")
    ap.add_argument("--train-rows", type=int, default=600)
    ap.add_argument("--valid-rows", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64, help="tokens decoded per speed sample")
    ap.add_argument("--short", action="store_true",
                    help="a smoke run: 16 rows (one step), 8 validation rows, 16 tokens")
    ap.add_argument("--measure", nargs=3, metavar=("GGUF", "HF", "EXAMPLES"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:  # the child: one weight type
        gguf, hf, ex = args.measure
        print(json.dumps(measure(Path(gguf), Path(hf), json.loads(Path(ex).read_text()),
                                 args.tokens)))
        return 0
    if args.short:
        args.train_rows, args.valid_rows, args.epochs, args.tokens = 16, 8, 1, 16
    from afinar.models.export.formats import QUANTS

    quants = [q.strip().lower() for q in args.quants.split(",") if q.strip()]
    bad = [q for q in quants if q not in QUANTS]
    if bad or not quants:
        sys.exit(f"error: unknown quantisation {bad[0] if bad else '(none)'!r}; known: "
                 f"{', '.join(QUANTS)}")
    if "f32" not in quants:
        quants.insert(0, "f32")  # the reference of every ratio
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.model:  # a private home: no other worker can take its job over, so a
            # step slower than the default lease (a loaded machine) does not lose it
            os.environ["AFINAR_HOME"] = str(tmp / "home")
            os.environ["AFINAR_JOB_LEASE_S"] = "3600"
        from afinar.models.export.gguf_format import write_gguf
        from afinar.models.export.source import resolve
        from afinar.models.export.verify import job_examples
        from afinar.models.loader import quiet_transformers
        from afinar.settings import get_settings

        quiet_transformers()
        model = args.model or _train(tmp, args.train_rows, args.valid_rows, args.epochs)
        src = resolve(model, get_settings())
        examples, what = job_examples(src, limit=args.valid_rows)
        if not examples:
            sys.exit(f"error: {model} has no job examples to measure quality on ({what})")
        (tmp / "examples.json").write_text(json.dumps(examples))
        hf = src.hf_folder(tmp)
        rows = {}
        for q in quants:
            print(f"{q}: writing the GGUF, then measuring it in a process of its own...",
                  flush=True)
            gguf = write_gguf(src, tmp / f"{q}.gguf", q, tmp)
            r = subprocess.run([sys.executable, __file__, "--tokens", str(args.tokens),
                                "--measure", str(gguf), str(hf), str(tmp / "examples.json")],
                               capture_output=True, text=True, check=False)
            if r.returncode != 0:
                sys.exit(f"error: measuring {q} failed: {r.stderr.strip().splitlines()[-1:]}")
            rows[q] = {**json.loads(r.stdout.strip().splitlines()[-1]),
                       "size": gguf.stat().st_size}
            gguf.unlink()
    ref = rows["f32"]
    print(f"\n{model}: {len(examples)} of {what}; llama.cpp, 1 thread, CPU\n")
    print(f"{'weights':<8}{'size MB':>9}{'':>6}{'peak RSS':>10}{'':>6}{'tok/s':>7}{'':>6}"
          f"{'val loss':>9}{'exact':>7}")
    for q, r in rows.items():
        print(f"{q:<8}{r['size'] / 1e6:>9.1f}{_ratio(r['size'], ref['size']):>6}"
              f"{r['peak_rss'] / 1e6:>10.0f}{_ratio(r['peak_rss'], ref['peak_rss']):>6}"
              f"{r['tok_s']:>7.1f}{_ratio(r['tok_s'], ref['tok_s']):>6}"
              f"{r['loss']:>9.4f}{r['exact']:>7.2f}")
    print("\npeak RSS: the whole measuring process (Python, torch, transformers' tokenizer "
          "included);\nthe model's own share (peak minus before loading it):")
    print("  " + ", ".join(f"{q} {r['model_rss'] / 1e6:.0f} MB "
                           f"({_ratio(r['model_rss'], ref['model_rss'])})"
                           for q, r in rows.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
