"""GPU check: where CUDA is present, fine-tune the embedded model (smollm2-135m-instruct) with
LoRA (bf16 where the GPU supports it: the runner's ``dtype_for``) and QLoRA (bitsandbytes 4-bit,
when importable), then serve the base and each fine-tune through the serving engines; print
training tokens/s, generation tokens/s and peak GPU memory for each. Exits 0 with "no CUDA" on a
machine without a CUDA device.

Everything runs through afinar's own code: the training is a real job (``Jobs.create``, claimed
and run by ``run_worker`` in this process: the worker, the ``JobRunner`` and its ``Trainer``),
and serving goes through ``ModelCache`` and ``Generator`` with ``Settings.engine`` set to each
engine (llama.cpp runs on the GPU only with a CUDA build of llama-cpp-python; the default pip
build is CPU-only, and this script says which it got).

NOT RUN ON A GPU YET: no GPU was available where this was written; on the 2-core CPU machine it
prints "no CUDA" and exits 0 (``.venv/bin/python benchmarks/gpu_check.py``).

Usage: ``python benchmarks/gpu_check.py [--examples 64] [--epochs 1] [--tokens 64]
[--engines transformers,llama.cpp] [--model smollm2-135m-instruct]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
           "List three primary colours.", "How do I install a package on Debian?"]


def make_data(n: int, path: Path) -> None:
    """The sarcasm training set where ../shared has it, else short synthetic chats."""
    src = SHARED / "datasets/sarcasm/train.jsonl"
    rows = ([json.loads(x) for x in src.read_text().splitlines()[:n]] if src.exists() else
            [{"messages": [{"role": "user", "content": f"Is headline {i} sarcastic?"},
                           {"role": "assistant", "content": "yes" if i % 2 else "no"}]}
             for i in range(n)])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def train(method: str, model: str, data: Path, epochs: int) -> dict:
    """One fine-tuning job through the worker; its tokens/s and the peak GPU memory."""
    import torch

    from afinar.store.files import Files
    from afinar.tuning import Jobs, run_worker

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    f = Files().create_from_path(data, "fine-tune")
    job = Jobs().create(model=model, training_file=f.id, seed=0,
                        method={"type": method, method: {}},
                        hyperparameters={"n_epochs": epochs, "batch_size": 8})
    t0 = time.perf_counter()
    run_worker(exit_when_idle=True, log=lambda m: None)
    seconds = time.perf_counter() - t0
    done = Jobs().get(job.id)
    if done.status != "succeeded":
        return {"method": method, "status": done.status, "error": done.error}
    rows = [e.data for e in Jobs().events(job.id) if e.type == "metrics"]
    tokens = sum(r.get("tokens", 0) for r in rows)
    step_s = sum(r.get("step_seconds", 0) for r in rows)
    return {"method": method, "status": "succeeded", "model": done.fine_tuned_model,
            "steps": len(rows), "tokens": tokens, "tokens_per_s": tokens / step_s if step_s else 0,
            "job_seconds": seconds, "peak_gpu": torch.cuda.max_memory_allocated()}


def serve(engine: str, model_ids: list[str], tokens: int) -> list[dict]:
    """Greedy generation on each model through ModelCache/Generator with ``engine``."""
    import torch

    from afinar.models import Generator, ModelCache, SamplingParams
    from afinar.settings import get_settings

    settings = get_settings().model_copy(update={"engine": engine})
    cache = ModelCache(max_models=1, max_adapters=4)
    greedy = SamplingParams(temperature=0, max_tokens=tokens)
    out = []
    for mid in model_ids:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        gen = Generator(cache.get(mid, settings=settings))
        gen.chat([{"role": "user", "content": PROMPTS[0]}], greedy)  # warm-up, load
        t0, n = time.perf_counter(), 0
        for p in PROMPTS:
            n += gen.chat([{"role": "user", "content": p}], greedy).completion_tokens
        seconds = time.perf_counter() - t0
        out.append({"engine": engine, "model": mid, "tokens": n, "tokens_per_s": n / seconds,
                    "peak_gpu": torch.cuda.max_memory_allocated()})
    cache.clear()
    return out


def llama_gpu() -> str:
    try:
        import llama_cpp

        return "CUDA build" if llama_cpp.llama_supports_gpu_offload() else "CPU-only build"
    except Exception as e:  # noqa: BLE001 - not installed or an old binding
        return f"not usable ({type(e).__name__})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--engines", default="transformers,llama.cpp")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(f"no CUDA: torch {torch.__version__} sees no CUDA device; nothing to check")
        return 0
    os.environ.setdefault("AFINAR_HOME", tempfile.mkdtemp(prefix="afinar-gpu-check-"))
    from afinar.settings import reset_settings

    reset_settings()
    dev = torch.cuda.get_device_properties(0)
    print(f"{dev.name}, {gib(dev.total_memory)}, bf16 "
          f"{'yes' if torch.cuda.is_bf16_supported() else 'no'}; torch {torch.__version__}")
    methods = ["lora"]
    try:
        import bitsandbytes  # noqa: F401

        methods.append("qlora")
    except ImportError:
        print("qlora: skipped (bitsandbytes is not importable: pip install bitsandbytes)")
    data = Path(os.environ["AFINAR_HOME"]) / "train.jsonl"
    make_data(args.examples, data)
    trained = []
    for m in methods:
        r = train(m, args.model, data, args.epochs)
        if r["status"] != "succeeded":
            print(f"train {m:6s} {r['status']}: {r['error']}")
            continue
        trained.append(r["model"])
        print(f"train {m:6s} {r['steps']:4d} steps  {r['tokens_per_s']:9.0f} tokens/s  "
              f"peak {gib(r['peak_gpu'])}  ({r['job_seconds']:.1f} s for the job)")
    failures = len(methods) - len(trained)
    for engine in args.engines.split(","):
        if engine == "llama.cpp":
            print(f"llama.cpp: llama-cpp-python is a {llama_gpu()}")
        try:
            rows = serve(engine, [args.model, *trained], args.tokens)
        except Exception as e:  # noqa: BLE001 - one engine's failure is reported, not fatal
            print(f"serve {engine}: failed: {type(e).__name__}: {e}")
            failures += 1
            continue
        for r in rows:
            print(f"serve {engine:12s} {r['model'][:40]:40s} {r['tokens_per_s']:7.1f} tok/s  "
                  f"peak {gib(r['peak_gpu'])}")
    sys.stdout.flush()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
