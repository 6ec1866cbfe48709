"""Model load time: GGUF through transformers (every time, the naive way) vs afinar's converted
safetensors cache. Prints both and their ratio, measured in the same run.

    .venv/bin/python benchmarks/model_load.py [--model smollm2-135m-instruct] [--repeats 3]

Target (issue #2): the cached load is at least 5x faster than the first (converting) load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["AFINAR_HOME"] = home
        from afinar.models import Catalog, load_causal_lm

        info = Catalog().get(args.model)
        if info.format != "gguf":
            print(f"{args.model} is not a GGUF model; nothing to compare")
            return 1
        t = time.perf_counter()
        first = load_causal_lm(info)
        first_s = time.perf_counter() - t
        assert first.loaded_from == "gguf"
        del first
        cached = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            lm = load_causal_lm(info)
            cached.append(time.perf_counter() - t)
            assert lm.loaded_from == "gguf-cache"
            del lm
    cached_s = statistics.median(cached)
    ratio = first_s / cached_s
    print(f"first load (GGUF dequantise + convert + save): {first_s:6.2f} s")
    print(f"cached load (safetensors), median of {args.repeats}:    {cached_s:6.2f} s")
    print(f"speed-up: {ratio:.1f}x (target >= 5x) -> {'PASS' if ratio >= 5 else 'FAIL'}")
    return 0 if ratio >= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
