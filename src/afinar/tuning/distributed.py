"""Training on several processes (issue 18): the same loop, with each optimizer step's examples
shared out between ranks and their gradients summed, so N processes compute what one does.

Why not ``accelerator.prepare(model)`` (DDP's wrapper): the trainer divides every part's summed
loss by the step's *global* units (trained tokens, pairs) before ``backward``, so the gradient of
a step is a sum over parts; DDP would average it over ranks instead and its bucketed hooks fire
per backward call, while an afinar step is several backward calls (gradient accumulation, long
batches split). Summing the gradients once per step (one flat ``all_reduce``) is the same
arithmetic as DDP's, in the place the loop needs it. The process group itself is accelerate's
(``PartialState``: gloo on the CPU, NCCL and one GPU per process on CUDA); processes are started
by ``torch.distributed.run`` (torchrun, accelerate's own multi-process launcher), whose agent
stops every rank when one dies.

What stays per process and what is agreed:
- the data order is a pure function of (seed, epoch) on every rank; rank r takes every N-th
  example of each gradient-accumulation batch (and every N-th validation batch), so the union of
  the ranks' work is the one-process step;
- losses, counts and validation sums are summed over ranks; rank 0's control signal (cancel,
  pause, a lost lease) is broadcast, so every rank stops at the same step;
- parameters stay equal on every rank (same start, same summed gradient, same optimizer), so
  rank 0 alone writes checkpoints, events and the final model.

Differences from one process, stated: dropout masks are drawn per process, so with dropout > 0
the run is a different (equally valid) sample than one process's; with dropout 0 the final
weights equal one process's up to float summation order (tests/unit/test_distributed.py: LoRA
on the tiny model, 12-24 steps, every weight within 1e-5 absolute / 1e-4 relative). FSDP (full
fine-tunes sharded across GPUs) is not used: a full fine-tune is replicated on every rank like
an adapter, which fits while the model fits one device; CUDA (NCCL, one GPU per process) is
untested here (no GPU).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class Collective:
    """One process: every operation is the identity (the trainer's default)."""

    rank, world = 0, 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, seq: Sequence[T]) -> list[T]:
        return list(seq)[self.rank::self.world]

    def sum(self, values: Sequence[float]) -> list[float]:
        return list(values)

    def sum_grads(self, params: Sequence[torch.Tensor]) -> None:
        pass

    def agree(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        return value


class TorchCollective(Collective):
    """Ranks of a ``torch.distributed`` process group (set up by accelerate's ``PartialState``)."""

    def __init__(self, device: str):
        import torch.distributed as dist

        self._dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = device

    def sum(self, values: Sequence[float]) -> list[float]:
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        self._dist.all_reduce(t)
        return t.tolist()

    def sum_grads(self, params: Sequence[torch.Tensor]) -> None:
        if not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._dist.all_reduce(flat)
        k = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[k:k + n].view_as(p).clone()
            k += n

    def agree(self, value: Any) -> Any:
        box = [value]
        self._dist.broadcast_object_list(box, src=0)
        return box[0]


# -- starting the ranks ----------------------------------------------------------------------
def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The launcher gets SIGTERM when the worker that started it dies (a killed worker must not
    leave ranks training behind it); torchrun then stops its ranks."""
    os.setpgrp()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def launch(job_id: str, worker: str, processes: int, log_path: os.PathLike,
           threads: int) -> int:
    """Run the job's training on ``processes`` ranks and wait; the launcher's exit status
    (0 when every rank finished). Output of every rank goes to ``log_path``. ``threads``: the
    worker's torch threads, shared out between the ranks (each gets at least one)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={processes}", "--max-restarts=0", "--monitor-interval=0.5",
           "-m", "afinar.tuning.rank", job_id, worker]
    per_rank = str(max(1, threads // processes))
    env = {**os.environ, "OMP_NUM_THREADS": per_rank, "AFINAR_THREADS": per_rank,
           "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent)
        try:
            return proc.wait()
        except BaseException:  # the worker is being stopped: stop the ranks with it
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
