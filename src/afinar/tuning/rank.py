"""One rank of a multi-process job: ``python -m afinar.tuning.rank JOB_ID WORKER``, started by
``tuning/distributed.launch`` under torchrun (which sets RANK, WORLD_SIZE and the rendezvous).

accelerate's ``PartialState`` joins the process group (gloo on the CPU; NCCL with one GPU per
process on CUDA), then the job runs as on one process with the ranks' ``TorchCollective``. The
worker that launched the ranks holds the job's lease and heartbeat; every rank runs under its
name, and only rank 0 writes.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    job_id, worker = argv
    from accelerate import PartialState

    from afinar.settings import get_settings
    from afinar.tuning.distributed import TorchCollective
    from afinar.tuning.jobs import Jobs
    from afinar.tuning.runner import JobRunner

    settings = get_settings()
    state = PartialState(cpu=settings.effective_device() == "cpu")
    dist = TorchCollective("cpu" if state.device.type == "cpu" else str(state.device))
    job = Jobs(settings).get(job_id)
    status = JobRunner(job, settings, worker, dist=dist).run()
    # a rank that stops for a reason every rank agreed on (done, cancelled, paused, failed as a
    # job) exits 0; torchrun's non-zero exit then means a rank died
    return 0 if status in ("succeeded", "cancelled", "paused", "failed") else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
