"""Peak memory of `afinar data validate` on a large generated JSONL file, against the peak of
the same command on a tiny file (the baseline: interpreter, libraries, tokenizer), measured in
the same run. Bounded memory means the difference stays small next to the file size.

    .venv/bin/python benchmarks/validate_memory.py --size-mb 1024 [--tokens]

Without --tokens the shape checks run alone (fast); with --tokens the embedded model's
tokenizer and template count every example too (about 3,000 examples/s on 2 cores).
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

WORDS = ("the of and to in is for on that with as was at by from has new after over man "
         "report local area says study finds nation trump woman obama year people").split()


def make_file(path: Path, size_mb: int, seed: int = 0) -> int:
    rnd, n, target = random.Random(seed), 0, size_mb << 20
    with open(path, "w") as f:
        while f.tell() < target:
            headline = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 14)))
            f.write(json.dumps({"messages": [
                {"role": "system", "content": "Is the headline sarcastic? Answer 1 or 0."},
                {"role": "user", "content": f"{headline} #{n}"},
                {"role": "assistant", "content": str(rnd.randint(0, 1))}]}) + "\n")
            n += 1
    return n


def peak_rss_mb(args: list[str]) -> tuple[float, float, int]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", "import sys; from afinar.cli import main; main()",
                        *args], capture_output=True, text=True)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return peak, wall, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--tokens", action="store_true")
    a = ap.parse_args()
    extra = [] if a.tokens else ["--no-tokens"]
    with tempfile.TemporaryDirectory() as d:
        os.environ.setdefault("AFINAR_HOME", str(Path(d) / "home"))
        small, big = Path(d) / "small.jsonl", Path(d) / "big.jsonl"
        make_file(small, 1)
        n = make_file(big, a.size_mb)
        # ru_maxrss of children is the max over all children so far: run the baseline first.
        base, base_s, _ = peak_rss_mb(["data", "validate", str(small), "--json", *extra])
        peak, wall, rc = peak_rss_mb(["data", "validate", str(big), "--json", *extra])
    print(f"file: {a.size_mb} MiB, {n:,} examples; tokens counted: {a.tokens}")
    print(f"baseline peak RSS (1 MiB file): {base:8.0f} MiB")
    print(f"peak RSS ({a.size_mb} MiB file):     {peak:8.0f} MiB  ({wall:.0f} s, exit {rc})")
    print(f"extra memory / file size: {(peak - base) / a.size_mb:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
