"""Crash faults in fine-tuning: a worker killed right after an end-of-epoch checkpoint resumes
with its best-validation record, so the job ships the same (best) checkpoint, with the same
weights, as a run that was never interrupted; the best checkpoint is never pruned."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from afinar.models import Catalog
from afinar.tuning import Jobs
from afinar.tuning.runner import JobRunner
from afinar.tuning.worker import run_worker
from tests.unit.test_tuning import _same, chat_rows, upload

# validation asks for another answer than training teaches: a full fine-tune with a large
# learning rate first improves the full validation loss (the end-of-turn token, the template),
# then overfits the training answer and worsens it, so the best epoch is not the last
HP = {"n_epochs": 4, "batch_size": 8, "learning_rate_multiplier": 1000, "keep_checkpoints": 1}
METHOD = {"type": "full"}

KILLER = textwrap.dedent("""
    import os, sys
    from afinar.tuning import runner
    original = runner.JobRunner._checkpoint
    def checkpoint(self, trainer, st, row):
        out = original(self, trainer, st, row)
        if st.step == int(sys.argv[1]):
            os._exit(137)  # as SIGKILL: no finally, no cleanup, the job stays 'running'
        return out
    runner.JobRunner._checkpoint = checkpoint
    from afinar.tuning.worker import run_worker
    run_worker(exit_when_idle=True, log=lambda m: None)
""")


@pytest.fixture
def tiny_home(home, tiny_model_template):
    Catalog().add("tiny", tiny_model_template)
    return home


def _manifest(model_id: str) -> dict:
    return json.loads((Catalog().get(model_id).path / "afinar-manifest.json").read_text())


def _weights(model_id: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Catalog().get(model_id).path / "model.safetensors"))


def _full_losses(job_id: str) -> list[tuple[int, float]]:
    return [(e.data["step"], e.data["full_valid_loss"]) for e in Jobs().events(job_id)
            if e.type == "metrics" and "full_valid_loss" in e.data]


def test_best_record_survives_a_kill_after_an_end_of_epoch_checkpoint(tiny_home, tmp_path):
    from afinar.settings import get_settings

    train = upload(tmp_path, chat_rows(24), "t.jsonl")
    val = upload(tmp_path, chat_rows(12, answer="The quick brown fox.", prefix="other"),
                 "v.jsonl")
    ref = Jobs().create(model="tiny", training_file=train, validation_file=val, seed=2,
                        method=METHOD, hyperparameters=HP)
    assert JobRunner(Jobs().get(ref.id), get_settings(), "test").run() == "succeeded"
    full = _full_losses(ref.id)
    best_step = min(full, key=lambda x: x[1])[0]
    assert best_step < full[-1][0], full  # the case that matters: best is not the last step
    ref_manifest = _manifest(Jobs().get(ref.id).fine_tuned_model)
    assert ref_manifest["best"]["step"] == best_step

    job = Jobs().create(model="tiny", training_file=train, validation_file=val, seed=2,
                        method=METHOD, hyperparameters=HP)
    env = {**os.environ, "AFINAR_HOME": str(tiny_home)}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(best_step)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert Jobs().get(job.id).status == "running"  # died with the job in hand
    assert run_worker(exit_when_idle=True, log=lambda m: None) == 1
    done = Jobs().get(job.id)
    assert done.status == "succeeded", done.error
    msgs = [e.message for e in Jobs().events(job.id)]
    assert any(m.startswith(f"Resumed from step {best_step}") for m in msgs)
    manifest = _manifest(done.fine_tuned_model)
    assert manifest["best"]["step"] == best_step
    assert manifest["chosen"]["checkpoint"].endswith(f":ckpt-step-{best_step}")
    assert manifest["best"]["full_valid_loss"] == pytest.approx(
        ref_manifest["best"]["full_valid_loss"], abs=1e-6)
    _same(_weights(Jobs().get(ref.id).fine_tuned_model), _weights(done.fine_tuned_model))
    # keep_checkpoints=1 keeps the newest, and the best is never pruned
    steps = sorted(c.step_number for c in Jobs().checkpoints(job.id))
    assert best_step in steps and full[-1][0] in steps
