"""Serving throughput: tokens/s for 1 and 8 concurrent streams on the embedded model
(smollm2-135m-instruct), for

- a plain transformers ``generate`` loop (the baseline, measured in the same run; 8 streams are 8
  threads calling ``generate`` at once),
- afinar's engine (``--engine``, default llama.cpp when installed) on the base alone,
- the same engine serving 4 LoRA fine-tunes of that base at once (requests cycle over them;
  random but non-zero LoRA weights, r=16 on all linear layers, registered as ``ft:`` models).

Prints tokens/s and the ratios against the targets (one stream >= 3x the plain loop; 4 mixed
adapters >= 0.8x base-only). Tokens are the completion tokens actually produced (greedy, at most
``--tokens`` per request).

Usage: ``python benchmarks/serving.py [--engine llama.cpp|transformers] [--tokens 64]
[--weights q8_0|f16|f32] [--adapters merged|runtime]``

``--serve`` measures continuous batching instead, through ``afinar serve`` (started here as a
subprocess on a free port, ``--max-batch``) with the openai SDK: for each count of concurrent
streams (``--streams``, default 1,4,8,16) every stream sends ``--prompts`` streamed chat
completions one after another (greedy, ``max_tokens`` = ``--tokens``); it prints aggregate
completion tokens/s (usage counts from the server), p50 and p90 time to first token, and the
ratio of each aggregate rate to the single-stream rate of the same run (target: >= 3x at 8
streams). ``--model-path DIR`` serves a local HF folder instead of the embedded model (a smoke
run with the tiny test model). Measured once, idle machine, transformers engine (the default),
``--serve --tokens 64``: 15.4 / 34.6 / 46.2 / 45.9 tok/s for 1 / 4 / 8 / 16 streams (8 streams
3.01x one stream; TTFT p50 192 / 332 / 511 / 7709 ms: with ``--max-batch 8``, 16 streams queue).

Measured: ``AFINAR_HOME=/tmp/lhome python benchmarks/serving.py --tokens 32 --prompts 2``, three
runs (2 cores, load average 3.4-3.6 from other sessions; llama.cpp, q8_0 GGUF, merged adapters,
one llama.cpp thread per model), tokens/s for 1 / 8 streams: plain transformers 22.1-23.3 /
22.2-22.8; llama.cpp base-only 87.2-100.5 / 82.0-104.0; 4 mixed adapters 91.6-99.2 / 82.8-85.5.
Ratios: one stream 3.95-4.38x the plain loop (target 3x: met); mixed/base 0.97-1.05x with one
stream and 0.82-1.01x with 8 (target 0.8x: met).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
           "List three primary colours.", "Explain what a GPU is in one sentence.",
           "How do I install a package on Debian?", "Say hello in Spanish.",
           "Give me a tip for writing clean code.", "What does a compiler do?"]


def make_adapters(n: int, folder, tok) -> list[str]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from afinar.models import Catalog
    from afinar.models.finetuned import MANIFEST
    from afinar.models.templates import template_fingerprint
    from afinar.store.db import get_database
    from afinar.store.tables import ModelRecord

    ids = []
    settings = Catalog().settings
    for i in range(n):
        torch.manual_seed(100 + i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(folder)), LoraConfig(
            r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM",
            init_lora_weights=False))  # random, non-zero B: the adapter changes the output
        out = settings.models_dir / "ft" / f"bench-{i}"
        model.save_pretrained(out)
        (out / MANIFEST).write_text(json.dumps({
            "base_model": "smollm2-135m-instruct", "method": "lora",
            "template_fingerprint": template_fingerprint(tok, model.generation_config)}))
        mid = f"ft:smollm2-135m-instruct:afinar:bench{i}:{i:08d}"
        with get_database(settings.db_url).session() as s:
            s.merge(ModelRecord(id=mid, kind="chat", format="peft", path=str(out),
                                base_model="smollm2-135m-instruct", owned_by="user", info={}))
        ids.append(mid)
    return ids


N_PROMPTS = [len(PROMPTS)]


def run_streams(n_streams: int, one_request) -> float:
    """Each of ``n_streams`` threads runs every prompt once; tokens/s over all of them."""
    counts = [0] * n_streams
    start = threading.Barrier(n_streams + 1)

    def worker(k: int) -> None:
        start.wait()
        for j, p in enumerate(PROMPTS[:N_PROMPTS[0]]):
            counts[k] += one_request(k, j, p)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_streams)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_bench(args) -> None:
    """Concurrent openai-SDK streams through ``afinar serve`` (see the module docstring)."""
    import math
    import statistics
    import subprocess
    import urllib.request

    import openai

    home = os.environ.setdefault("AFINAR_HOME", tempfile.mkdtemp(prefix="afinar-bench-serve-"))
    model = "smollm2-135m-instruct"
    if args.model_path:
        from afinar.models import Catalog

        model = "bench-local"
        Catalog().add(model, args.model_path)
    port = _free_port()
    cmd = [sys.executable, "-m", "afinar", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--no-worker", "--max-batch", str(args.max_batch)]
    if args.engine:
        cmd += ["--engine", args.engine]
    env = {**os.environ, "AFINAR_HOME": home}
    if args.weights:
        env["AFINAR_LLAMA_WEIGHTS"] = args.weights
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("afinar serve did not start: "
                                     + server.stderr.read().decode()[-2000:]) from None
                time.sleep(0.3)
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0, timeout=600)
        prompts = PROMPTS[:max(1, args.prompts)]

        def request(p: str) -> tuple[int, float]:
            t0, first, tokens = time.perf_counter(), None, 0
            for c in sdk.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": p}], stream=True,
                    temperature=0, max_tokens=args.tokens,
                    stream_options={"include_usage": True}):
                if first is None and c.choices and c.choices[0].delta.content:
                    first = time.perf_counter() - t0
                if c.usage is not None:
                    tokens = c.usage.completion_tokens
            return tokens, first if first is not None else time.perf_counter() - t0

        request(prompts[0])  # load the model before timing
        rows = []
        for n in [int(x) for x in args.streams.split(",")]:
            ttfts: list[float] = []
            lock = threading.Lock()

            def one(k: int, j: int, p: str) -> int:
                tokens, ttft = request(prompts[(k + j) % len(prompts)])
                with lock:
                    ttfts.append(ttft)
                return tokens

            N_PROMPTS[0] = len(prompts)
            rate = run_streams(n, one)
            rows.append((n, rate, statistics.median(ttfts),
                         sorted(ttfts)[min(len(ttfts) - 1, math.ceil(0.9 * len(ttfts)) - 1)]))
    finally:
        server.terminate()
        server.wait(30)
    print(f"through afinar serve (openai SDK, streamed), {model}, engine "
          f"{args.engine or 'default'}, --max-batch {args.max_batch}, greedy, <= {args.tokens} "
          f"tokens/request, {len(prompts)} requests per stream")
    single = rows[0][1] if rows and rows[0][0] == 1 else None
    for n, rate, p50, p90 in rows:
        ratio = f"  {rate / single:5.2f}x one stream" if single else ""
        print(f"  {n:3d} stream(s): {rate:7.1f} tok/s  ttft p50 {p50 * 1000:7.0f} ms  "
              f"p90 {p90 * 1000:7.0f} ms{ratio}")
    if single and any(n == 8 for n, *_ in rows):
        r8 = next(rate for n, rate, *_ in rows if n == 8)
        print(f"  8 streams / 1 stream = {r8 / single:.2f}x (target >= 3x)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", action="store_true",
                    help="continuous batching through afinar serve with the openai SDK")
    ap.add_argument("--max-batch", type=int, default=8, help="with --serve: serve --max-batch")
    ap.add_argument("--model-path", default=None,
                    help="with --serve: a local HF folder to serve instead of the embedded model")
    ap.add_argument("--engine", default=None)
    ap.add_argument("--weights", default=None, help="llama.cpp GGUF type: q8_0 (default), f16, f32")
    ap.add_argument("--adapters", default=None,
                    help="llama.cpp adapters: merged (default) or runtime (LoRA on the base context)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--streams", default=None, help="default 1,8 (--serve: 1,4,8,16)")
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="requests per stream")
    args = ap.parse_args()
    if args.serve:
        args.streams = args.streams or "1,4,8,16"
        serve_bench(args)
        return
    args.streams = args.streams or "1,8"
    N_PROMPTS[0] = args.prompts
    os.environ.setdefault("AFINAR_HOME", tempfile.mkdtemp(prefix="afinar-bench-serving-"))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from afinar.models import Catalog, Generator, ModelCache, SamplingParams
    from afinar.models.loader import hf_folder
    from afinar.models.templates import render_ids
    from afinar.settings import get_settings

    engine = args.engine
    if engine is None:
        try:
            from afinar.models.engines.llamacpp import LlamaCppEngine

            LlamaCppEngine()
            engine = "llama.cpp"
        except Exception:  # noqa: BLE001 - not installed: measure the reference engine
            engine = "transformers"
    update = {"engine": engine, "max_adapters": 4}
    if args.weights:
        update["llama_weights"] = args.weights
    if args.adapters:
        update["llama_adapters"] = args.adapters
    settings = get_settings().model_copy(update=update)
    info = Catalog(settings).get("smollm2-135m-instruct")
    folder, _ = hf_folder(info, settings)
    tok = AutoTokenizer.from_pretrained(str(folder))
    torch.set_num_threads(settings.effective_threads)
    streams = [int(s) for s in args.streams.split(",")]
    msgs = {p: [{"role": "user", "content": p}] for p in PROMPTS}
    results: dict[str, dict[int, float]] = {}

    plain = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    plain_ids = {p: torch.tensor([render_ids(tok, m)]) for p, m in msgs.items()}

    def plain_request(k, j, p):
        with torch.inference_mode():
            out = plain.generate(plain_ids[p], attention_mask=torch.ones_like(plain_ids[p]),
                                 max_new_tokens=args.tokens, do_sample=False,
                                 pad_token_id=tok.eos_token_id)
        return out.shape[1] - plain_ids[p].shape[1]

    plain_request(0, 0, PROMPTS[0])  # warm-up
    results["plain transformers generate"] = {n: run_streams(n, plain_request) for n in streams}
    del plain

    adapters = make_adapters(4, folder, tok)
    cache = ModelCache(max_models=1, max_adapters=4)
    greedy = SamplingParams(temperature=0, max_tokens=args.tokens)

    def base_request(k, j, p):
        return Generator(cache.get("smollm2-135m-instruct", settings=settings)).chat(
            msgs[p], greedy).completion_tokens

    def mixed_request(k, j, p):
        mid = adapters[(k + j) % len(adapters)]
        return Generator(cache.get(mid, settings=settings)).chat(msgs[p], greedy).completion_tokens

    base_request(0, 0, PROMPTS[0])
    for mid in adapters:  # load (and convert, for llama.cpp) before timing
        Generator(cache.get(mid, settings=settings)).chat(msgs[PROMPTS[0]], greedy)
    results[f"afinar {engine}, base only"] = {n: run_streams(n, base_request) for n in streams}
    results[f"afinar {engine}, 4 mixed adapters"] = {
        n: run_streams(n, mixed_request) for n in streams}

    print(f"serving throughput, smollm2-135m-instruct, greedy, <= {args.tokens} tokens/request, "
          f"{args.prompts} requests per stream, {settings.effective_threads} torch threads"
          + (f", GGUF {settings.llama_weights}, adapters {settings.llama_adapters}, "
             f"{settings.llama_threads} llama.cpp thread(s) per model"
             if engine == "llama.cpp" else ""))
    for name, r in results.items():
        print(f"  {name:45s} " + "  ".join(f"{n} stream(s): {v:6.1f} tok/s" for n, v in r.items()))
    pl = results["plain transformers generate"]
    base = results[f"afinar {engine}, base only"]
    mixed = results[f"afinar {engine}, 4 mixed adapters"]
    for n in streams:
        print(f"  {n} stream(s): engine/plain = {base[n] / pl[n]:.2f}x (target >= 3x for 1 "
              f"stream);  mixed/base = {mixed[n] / base[n]:.2f}x (target >= 0.8x)")
    sys.stdout.flush()
    os._exit(0)  # skip llama-cpp-python's noisy finalisers at interpreter exit


if __name__ == "__main__":
    main()
