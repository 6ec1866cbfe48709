"""Training throughput and memory: the same LoRA on the same data, in one run, four ways:

  (a) TRL SFTTrainer + PEFT at its defaults (gradient checkpointing on),
  (b) TRL SFTTrainer + PEFT with gradient checkpointing off,
  (c) afinar (length-grouped batches, dynamic padding, loss over trained positions only,
      computed in chunks of ``AFINAR_LOSS_CHUNK_TOKENS`` positions: the chunked loss),
  (d) afinar with the loss unchunked (``AFINAR_LOSS_CHUNK_TOKENS=0``: the logits of every
      trained position at once, as before the chunked loss).

Each runs in its own process (so peak RSS is its own). Prints real (non-padding) tokens per
second, peak RSS, the ratios of tokens/s and of peak RSS against (a), (b) and (d), and achieved
FLOP/s against a matmul peak measured in this run. ``--variants`` picks a subset (a smoke run on
a tiny model: ``--model tiny --examples 8 --variants afinar,afinar-unchunked``).

    .venv/bin/pip install "trl==1.16.*"      # the baseline (make bench does this)
    .venv/bin/python benchmarks/train_throughput.py [--examples 96] [--model smollm2-135m-instruct]

Targets on the 2-core machine with the embedded model: (c) >= 2x (a) and >= 1.25x (b) in real
tokens/s; peak RSS of (c) <= 0.4x (a) (issue 20) at no less than (d)'s tokens/s. FLOPs per real
token: 4 x the model's parameters (forward 2N, backward 2N for activation gradients); LoRA's own
weight gradients (~4% more) are not counted, so utilisation is slightly understated.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}


def make_data(n: int, path: Path) -> None:
    """Half short-label examples, half multi-turn conversations of a few hundred tokens."""
    rnd = random.Random(0)
    sarcasm = SHARED / "datasets/sarcasm/train.jsonl"
    faq = SHARED / "corpora/debian-faq.txt"
    shorts = ([json.loads(x) for x in sarcasm.read_text().splitlines()[:n]] if sarcasm.exists()
              else [{"messages": [{"role": "user", "content": f"headline number {i} about "
                                   "the news"}, {"role": "assistant", "content": str(i % 2)}]}
                    for i in range(n)])
    paras = ([p for p in faq.read_text().split("\n\n") if len(p) > 300] if faq.exists()
             else [" ".join(f"word{j}" for j in range(120)) for _ in range(50)])
    rows = []
    for i in range(n):
        if i % 2 == 0:
            rows.append(shorts[i])
        else:
            a, b = rnd.sample(paras, 2)
            rows.append({"messages": [
                {"role": "user", "content": "Summarise: " + a[:900]},
                {"role": "assistant", "content": a[:300]},
                {"role": "user", "content": "And this one: " + b[:600]},
                {"role": "assistant", "content": b[:400]}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_trl(data: Path, model_dir: str, checkpointing: bool, out: Path) -> dict:
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ds = load_dataset("json", data_files=str(data), split="train")
    cfg = SFTConfig(output_dir=str(out), per_device_train_batch_size=8, num_train_epochs=1,
                    learning_rate=2e-4, logging_steps=1, save_strategy="no", report_to="none",
                    use_cpu=True, max_length=2048, dataloader_num_workers=0,
                    **({} if checkpointing else {"gradient_checkpointing": False}))
    peft_cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                          task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model_dir, args=cfg, train_dataset=ds, processing_class=tok,
                         peft_config=peft_cfg)
    real = sum(len(x) for x in trainer.train_dataset["input_ids"])
    t = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t
    return {"real_tokens": real, "seconds": seconds,
            "gradient_checkpointing": bool(trainer.args.gradient_checkpointing)}


def run_afinar(data: Path, model_id: str) -> dict:
    from afinar.settings import get_settings
    from afinar.store.files import Files
    from afinar.tuning import Jobs
    from afinar.tuning.runner import JobRunner

    f = Files().create_from_path(data, "fine-tune")
    job = Jobs().create(model=model_id, training_file=f.id, seed=0,
                        method={"type": "lora", "lora": LORA},
                        hyperparameters={"n_epochs": 1, "batch_size": 8,
                                         "learning_rate_multiplier": 1})
    assert JobRunner(Jobs().get(job.id), get_settings(), "bench").run() == "succeeded"
    rows = [e.data for e in Jobs().events(job.id) if e.type == "metrics"]
    seconds = sum(r["step_seconds"] for r in rows)  # wall time, overheads included
    tokens = sum(r["tokens"] for r in rows if "tokens" in r)
    return {"real_tokens": tokens, "seconds": seconds}


VARIANTS = ("trl-default", "trl-no-checkpointing", "afinar", "afinar-unchunked")


def child(args) -> None:
    data = Path(args.data)
    if args.variant == "afinar-unchunked":  # before anything reads the settings
        os.environ["AFINAR_LOSS_CHUNK_TOKENS"] = "0"
    if args.variant.startswith("afinar"):
        res = run_afinar(data, args.model)
    else:
        from afinar.models import Catalog
        from afinar.models.loader import hf_folder

        folder, _ = hf_folder(Catalog().get(args.model))
        res = run_trl(data, str(folder), args.variant == "trl-default", Path(args.out))
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res))


def ratios(results: dict[str, dict]) -> str:
    """afinar's tokens/s and peak RSS against each other variant of this run, with targets."""
    if "afinar" not in results:
        return "no afinar run: no ratios"
    c = results["afinar"]
    targets = {"trl-default": ("target >= 2", "target <= 0.40"),
               "trl-no-checkpointing": ("target >= 1.25", ""),
               "afinar-unchunked": ("target >= 1.00", "")}
    lines = [f"{'afinar (chunked loss) /':28} {'tok/s':>6} {'':15} {'peak RSS':>8}"]
    for k, (t_tps, t_rss) in targets.items():
        if k in results:
            r = results[k]
            lines.append(f"{'  ' + k:28} {c['tokens_per_second'] / r['tokens_per_second']:5.2f}x"
                         f" {t_tps:15} {c['peak_rss_mib'] / r['peak_rss_mib']:7.2f}x {t_rss}")
    return "\n".join(lines)


def matmul_peak() -> float:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    t, n = time.perf_counter(), 10
    for _ in range(n):
        a @ b
    return 2 * 2048**3 * n / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=96)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated subset of {', '.join(VARIANTS)}")
    ap.add_argument("--variant"), ap.add_argument("--data"), ap.add_argument("--out")
    a = ap.parse_args()
    variants = [v for v in a.variants.split(",") if v]
    if unknown := sorted(set(variants) - set(VARIANTS)):
        print(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
        return 2
    if a.variant:
        child(a)
        return 0
    from afinar.models import Catalog

    info = Catalog().get(a.model)
    n_params = info.parameters or 0
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "data.jsonl"
        make_data(a.examples, data)
        results = {}
        for v in variants:
            p = subprocess.run([sys.executable, __file__, "--variant", v, "--data", str(data),
                                "--out", str(Path(d) / v), "--model", a.model],
                               capture_output=True, text=True)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode or not line:
                print(f"{v} failed:\n{p.stderr[-3000:]}")
                return 1
            results[v] = json.loads(line[0][7:])
    peak = matmul_peak()
    lora_note = "LoRA r=16 on all linear layers"
    print(f"model {a.model} ({n_params / 1e6:.1f}M parameters), {a.examples} examples, batch 8, "
          f"1 epoch, {lora_note}; matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'variant':24} {'real tok/s':>10} {'peak RSS':>9} {'GFLOP/s':>8} {'MFU':>6}")
    for v, r in results.items():
        tps = r["real_tokens"] / r["seconds"]
        flops = 4 * n_params * tps
        r["tokens_per_second"] = tps
        print(f"{v:24} {tps:10.0f} {r['peak_rss_mib']:7.0f}Mi {flops / 1e9:8.1f} "
              f"{flops / peak:6.1%}")
    print(ratios(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
