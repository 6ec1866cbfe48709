"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# torch threads per test process: the cores shared among pytest-xdist's workers (`make test`
# runs two on a 2-core machine), so two workers never put four busy threads on two cores
THREADS = str(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT",
                                                                  "1"))))


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``afinar ARGV`` in-process: (exit code, stdout, stderr)."""
    from afinar.cli import main

    code = 0
    try:
        main(list(argv))
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def bias_to(lm, token_id: int, bias: float = 10.0) -> None:
    """Make the model all but certain to pick ``token_id`` (a fresh, untied lm_head with a
    bias; every other logit is 0)."""
    import torch

    cfg = lm.model.config
    head = torch.nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=True)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    head.bias.data[token_id] = bias
    lm.model.lm_head = head


@contextlib.contextmanager
def home_at(path: Path) -> Iterator[Path]:
    """A fresh AFINAR_HOME for a module-scoped fixture (the ``home`` fixture is per test)."""
    from afinar.settings import reset_settings
    from afinar.store.db import reset_databases

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AFINAR_HOME", str(path))
        mp.delenv("AFINAR_DATABASE_URL", raising=False)
        mp.setenv("AFINAR_THREADS", THREADS)
        reset_settings()
        reset_databases()
        try:
            yield path
        finally:
            reset_settings()
            reset_databases()


def link_conversion(home: Path, folder: Path) -> None:
    """Let ``home`` find ``folder`` as its own cached conversion of the embedded model."""
    dest = home / "models" / "gguf-cache" / folder.name
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest.symlink_to(folder, target_is_directory=True)


def all_at_once(fn: Callable, args: list) -> None:
    """``fn(arg)`` for every arg, each in its own thread, all released together."""
    start = threading.Barrier(len(args))

    def go(a):
        start.wait()
        fn(a)

    threads = [threading.Thread(target=go, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
