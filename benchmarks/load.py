"""Load: N concurrent clients against a live ``afinar serve`` on loopback for a bounded time,
mixing embeddings, vector-store search and chat (``max_tokens`` 8) on the embedded models;
reports requests, errors and p50/p95 latency per kind.

The server is started here (``afinar serve --no-worker`` on a free port, in ``AFINAR_HOME`` or
a temporary one), with a vector store of a few documents; each client is a thread with its own
``httpx.Client`` cycling embeddings -> search -> chat. Any non-200 answer or transport error is
an error, and the first ones are printed.

Usage: ``python benchmarks/load.py [--clients 32] [--seconds 60] [--model smollm2-135m-instruct]``

Measured: ``python benchmarks/load.py --clients 32 --seconds 60`` (2 cores, load average 3.5
from other sessions; transformers engine; 103 s of wall time as in-flight chats finish): 0 errors
in 275 requests, server alive after; embeddings 81 ok, p50 0.06 s, p95 1.10 s; search 92 ok,
p50 0.07 s, p95 0.76 s; chat (8 tokens) 102 ok, p50 24.6 s, p95 40.3 s (one generation at a
time per model: 32 clients queue on it). Before the embedder's lock, embeddings under 16-32
clients failed with "Unable to create tensor ... padding".
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict

import httpx

DOCS = {f"doc{i}.md": f"# Topic {i}\n\nItem {i} costs {10 + i} euros and ships in {i % 5 + 1} "
        f"days from the warehouse in city number {i}. Returns are accepted within {20 + i} days."
        for i in range(8)}
QUESTIONS = ["How much does item 3 cost?", "How long do returns last for item 5?",
             "Where does item 2 ship from?", "Which item ships in 4 days?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "AFINAR_HOME": home}
    proc = subprocess.Popen([sys.executable, "-m", "afinar", "serve", "--no-worker", "--host",
                             "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("afinar serve exited: " + proc.stderr.read().decode()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("afinar serve did not answer /health in 180 s")


def setup_store(http: httpx.Client) -> str:
    ids = []
    for name, text in DOCS.items():
        r = http.post("/v1/files", files={"file": (name, text.encode())},
                      data={"purpose": "assistants"})
        r.raise_for_status()
        ids.append(r.json()["id"])
    r = http.post("/v1/vector_stores", json={"name": "load", "file_ids": ids}, timeout=600)
    r.raise_for_status()
    return r.json()["id"]


def run(url: str, store: str, model: str, clients: int, seconds: float):
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, list[str]] = defaultdict(list)
    lock, stop_at = threading.Lock(), time.monotonic() + seconds
    start = threading.Barrier(clients)

    def client(i: int) -> None:
        kinds = ("embeddings", "search", "chat")
        with httpx.Client(base_url=url, timeout=300) as http:
            start.wait()
            k = i
            while time.monotonic() < stop_at:
                kind, q = kinds[k % 3], QUESTIONS[k % len(QUESTIONS)]
                k += 1
                t0 = time.perf_counter()
                try:
                    if kind == "embeddings":
                        r = http.post("/v1/embeddings", json={"input": [q, q + " please"]})
                    elif kind == "search":
                        r = http.post(f"/v1/vector_stores/{store}/search", json={"query": q})
                    else:
                        r = http.post("/v1/chat/completions", json={
                            "model": model, "max_tokens": 8,
                            "messages": [{"role": "user", "content": q}]})
                    ok, why = r.status_code == 200, f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as e:
                    ok, why = False, repr(e)[:200]
                dt = time.perf_counter() - t0
                with lock:
                    (latencies[kind] if ok else errors[kind]).append(dt if ok else why)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.monotonic() - t0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(
        values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args()
    home = os.environ.get("AFINAR_HOME") or tempfile.mkdtemp(prefix="afinar-load-")
    port = free_port()
    server = start_server(home, port)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=600) as http:
            store = setup_store(http)
            http.post("/v1/chat/completions", json={  # load the chat model before timing
                "model": args.model, "max_tokens": 1,
                "messages": [{"role": "user", "content": "hi"}]}).raise_for_status()
        latencies, errors, wall = run(url, store, args.model, args.clients, args.seconds)
        alive = httpx.get(f"{url}/health", timeout=10).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"{args.clients} clients, {wall:.0f} s, model {args.model}, server alive after: "
          f"{alive}")
    print(f"{'kind':<11}{'ok':>7}{'errors':>8}{'p50 s':>9}{'p95 s':>9}{'req/s':>8}")
    total_errors = 0
    for kind in ("embeddings", "search", "chat"):
        ok, bad = latencies[kind], errors[kind]
        total_errors += len(bad)
        print(f"{kind:<11}{len(ok):>7}{len(bad):>8}{pct(ok, 50):>9.2f}{pct(ok, 95):>9.2f}"
              f"{len(ok) / wall:>8.1f}")
    print(f"errors: {total_errors}")
    for kind, bad in errors.items():
        for why in bad[:3]:
            print(f"  {kind}: {why}")
    sys.exit(1 if total_errors or not alive else 0)


if __name__ == "__main__":
    main()
