"""Multi-process training (issue 18, item 3): a job with ``processes=2`` runs the same loop on two
ranks (torchrun + accelerate's process group, gloo on the CPU) and ends with the adapter a
one-process job of the same global batch and seed ends with; a rank killed with SIGKILL makes
the worker restart the ranks from the last checkpoint instead of hanging or failing.

Dropout is 0: each process draws its own dropout masks, so with dropout the two runs are
different samples (tuning/distributed.py says so)."""

import signal
import threading
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from afinar.errors import InvalidRequest
from afinar.models import Catalog
from afinar.tuning import Jobs
from tests.unit.test_tuning import chat_rows, run_job, upload

LORA = {"type": "lora", "lora": {"dropout": 0.0}}


@pytest.fixture
def tiny_home(home, tiny_model_template):
    Catalog().add("tiny", tiny_model_template)
    return home


def _adapter(job_id: str) -> dict[str, torch.Tensor]:
    model = Jobs().get(job_id).fine_tuned_model
    return load_file(str(Catalog().get(model).path / "adapter_model.safetensors"))


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:  # the same arithmetic, summed in another order
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def _metrics(job_id: str) -> list[dict]:
    return [e.data for e in Jobs().events(job_id) if e.type == "metrics"]


def test_two_processes_end_with_one_process_adapter(tiny_home, tmp_path):
    train = upload(tmp_path, chat_rows(24), "t.jsonl")
    val = upload(tmp_path, chat_rows(6, prefix="held out"), "v.jsonl")
    hp = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 20}
    one = Jobs().create(model="tiny", training_file=train, validation_file=val, method=LORA,
                        hyperparameters=hp, seed=3)
    assert run_job(one) == "succeeded"
    two = Jobs().create(model="tiny", training_file=train, validation_file=val, method=LORA,
                        hyperparameters=hp, seed=3, processes=2)
    assert Jobs().get(two.id).info["processes"] == 2
    assert run_job(two) == "succeeded"
    _close(_adapter(one.id), _adapter(two.id))
    m1, m2 = _metrics(one.id), _metrics(two.id)
    assert [r["step"] for r in m1] == [r["step"] for r in m2] and len(m1) == 12
    for a, b in zip(m1, m2):  # rank 0 reports the sums over both ranks
        assert b["tokens"] == a["tokens"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        if "full_valid_loss" in a:
            assert b["full_valid_loss"] == pytest.approx(a["full_valid_loss"], rel=1e-4)


def _rank_process(rank: int, job_id: str) -> psutil.Process | None:
    for p in psutil.Process().children(recursive=True):
        try:
            if "afinar.tuning.rank" in p.cmdline() and job_id in p.cmdline() \
                    and p.environ().get("RANK") == str(rank):
                return p
        except psutil.Error:
            continue
    return None


def test_a_killed_rank_restarts_from_the_last_checkpoint(tiny_home, tmp_path):
    train = upload(tmp_path, chat_rows(48), "t.jsonl")
    hp = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 20,
          "checkpoint_every_steps": 4}
    ref = Jobs().create(model="tiny", training_file=train, method=LORA, hyperparameters=hp,
                        seed=4)
    assert run_job(ref) == "succeeded"
    job = Jobs().create(model="tiny", training_file=train, method=LORA, hyperparameters=hp,
                        seed=4, processes=2)
    killed: list[int] = []

    def kill_rank_1() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            steps = [r["step"] for r in _metrics(job.id)]
            if steps and steps[-1] >= 6 and (p := _rank_process(1, job.id)):
                p.send_signal(signal.SIGKILL)
                killed.append(steps[-1])
                return
            time.sleep(0.05)

    t = threading.Thread(target=kill_rank_1)
    t.start()
    assert run_job(job) == "succeeded"
    t.join()
    assert killed, "rank 1 was never seen running"
    msgs = [e.message for e in Jobs().events(job.id)]
    assert any(m.startswith("A training process died") for m in msgs)
    assert any(m.startswith("Resumed from step ") for m in msgs)
    _close(_adapter(ref.id), _adapter(job.id))


def test_processes_out_of_range_is_refused(tiny_home, tmp_path):
    train = upload(tmp_path, chat_rows(8), "t.jsonl")
    with pytest.raises(InvalidRequest, match="processes"):
        Jobs().create(model="tiny", training_file=train, processes=0)
