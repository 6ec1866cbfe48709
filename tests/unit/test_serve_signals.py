"""``afinar serve`` stopped by SIGTERM (systemd, Docker) or SIGINT (Ctrl-C) stops the worker
process it started: a real ``afinar serve`` on a free loopback port, in a fresh AFINAR_HOME."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

START_S = 90  # importing torch and friends on a loaded 2-core machine
GONE_S = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by whoever adopted it, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _worker_pid(home: Path, deadline: float) -> int:
    """The pid the worker wrote into ``worker.lock`` once it held the lock."""
    lock = home / "worker.lock"
    while time.monotonic() < deadline:
        text = lock.read_text().strip() if lock.exists() else ""
        if text.isdigit():
            return int(text)
        time.sleep(0.1)
    raise AssertionError("the worker never took its lock")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_its_worker(tmp_path, sig):
    home, port = tmp_path / "home", _free_port()
    env = {**os.environ, "AFINAR_HOME": str(home), "AFINAR_THREADS": "1"}
    env.pop("AFINAR_DATABASE_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "afinar", "serve", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    worker = None
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "afinar serve did not answer /health"
            time.sleep(0.2)
        worker = _worker_pid(home, deadline)
        assert worker != server.pid and _alive(worker)
        server.send_signal(sig)
        server.wait(timeout=GONE_S)
        gone_by = time.monotonic() + GONE_S
        while _alive(worker) and time.monotonic() < gone_by:
            time.sleep(0.1)
        assert not _alive(worker), f"worker {worker} still runs after {sig.name} to serve"
        assert b"Traceback" not in server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if worker is not None and _alive(worker):  # never leave an orphan behind
            os.kill(worker, signal.SIGKILL)
