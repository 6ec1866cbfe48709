"""Small datasets and ``auto``: the batch-size / epochs / learning-rate rules as a table, the
loss-curve check, and jobs on the tiny model that take enough steps with every hyperparameter
left auto and warn when training ends far from converged."""

import json

import pytest

from afinar.models import Catalog
from afinar.settings import get_settings
from afinar.store.files import Files
from afinar.tuning import Hyperparameters, Jobs, resolve
from afinar.tuning.hparams import MIN_STEPS, auto_batch_size, convergence_note, few_steps_note
from afinar.tuning.runner import JobRunner

A = "auto"

# n examples, n_epochs, batch_size, gradient accumulation -> epochs, batch size, total steps
RULES = [
    (37, A, A, 1, 3, 1, 111),  # OpenAI: ~0.2% of 37 -> batch 1, 3 epochs
    (37, 4, A, 1, 4, 1, 148),  # the job: n_epochs=4 set, batch auto (was 8: 20 steps)
    (37, A, 8, 1, 20, 8, 100),  # batch set: epochs rise to reach 100 steps
    (37, 4, 8, 1, 4, 8, 20),  # both set: kept (and a warning before training)
    (37, 1, A, 1, 1, 1, 37),  # one epoch asked for: batch 1 is all auto can do
    (12, A, A, 1, 9, 1, 108),  # OpenAI's 100 // 12 = 8 epochs are 96 steps: one more
    (5, A, A, 1, 20, 1, 100),  # OpenAI's 5 examples -> 20 epochs
    (3, A, A, 1, 25, 1, 75),  # never past 25 epochs
    (400, A, A, 1, 3, 1, 1200),
    (1000, A, A, 1, 3, 2, 1500),
    (5000, A, A, 1, 3, 8, 1875),  # 0.2% = 10 -> nearest power of two, 8
    (30000, A, A, 1, 1, 64, 469),  # OpenAI: 25,000 // 30,000 -> 1 epoch
    (200000, A, A, 1, 1, 256, 782),  # capped at 256
    (1500, 1, A, 8, 1, 1, 188),  # accumulation 8: batch halves 4 -> 2 -> 1 to reach 100 steps
    (300, 1, A, 4, 1, 1, 75),
    (20, A, 32, 1, 25, 20, 25),  # a batch larger than the set is the set
]


@pytest.mark.parametrize("n,epochs,batch,ga,want_epochs,want_batch,want_steps", RULES)
def test_auto_rules(n, epochs, batch, ga, want_epochs, want_batch, want_steps):
    hp = Hyperparameters(n_epochs=epochs, batch_size=batch, gradient_accumulation_steps=ga)
    r = resolve(hp, n, 2e-4, 2048)
    assert (r.n_epochs, r.batch_size, r.total_steps) == (want_epochs, want_batch, want_steps)
    assert (few_steps_note(r) is None) == (r.total_steps >= MIN_STEPS)


@pytest.mark.parametrize("n,batch,mult", [(37, 1, 1.0), (8000, 16, 1.0), (16000, 32, 2.0),
                                          (60000, 128, 4.0)])
def test_learning_rate_multiplier_follows_the_batch(n, batch, mult):
    r = resolve(Hyperparameters(), n, 2e-4, 2048)
    assert (r.batch_size, r.learning_rate_multiplier) == (batch, mult)
    assert r.learning_rate == pytest.approx(2e-4 * mult)
    assert auto_batch_size(n) == batch


def test_explicit_values_are_never_changed():
    r = resolve(Hyperparameters(n_epochs=2, batch_size=4, learning_rate_multiplier=0.5), 37,
                2e-4, 2048)
    assert (r.n_epochs, r.batch_size, r.learning_rate) == (2, 4, 1e-4)
    assert "Only 20 optimiser steps" in few_steps_note(r)


CURVES = [
    ("converged", [2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05], None),
    ("still falling", [2.0 - 0.15 * i for i in range(10)], "still falling steeply"),
    ("barely moved", [2.0, 2.1, 1.9, 2.0, 2.05, 1.95, 2.0, 1.9, 2.0, 1.95], "barely moved"),
    ("too short to say", [2.0, 1.0, 0.5], None),
    ("noisy but flat at the end", [3.0, 2.0, 1.0, 0.3, 0.4, 0.3, 0.35, 0.3, 0.32, 0.3], None),
    ("a small fall near zero", [6.0, 5.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.12, 0.10, 0.09], None),
    ("the issue's 20 steps", [1.6, 1.5, 1.4, 1.3, 1.2, 1.1, 1.0, 0.95, 0.9, 0.85, 0.8, 0.75,
                              0.7, 0.65, 0.6, 0.55, 0.5, 0.46, 0.43, 0.42], "still falling"),
]


@pytest.mark.parametrize("what,losses,says", CURVES, ids=[c[0] for c in CURVES])
def test_convergence_note(what, losses, says):
    note = convergence_note(losses)
    if says is None:
        assert note is None
    else:
        assert says in note and "n_epochs" in note


# -- jobs on the tiny model -------------------------------------------------------------------

def constant_field_rows(n):
    """A JSON answer with a constant field and a field that depends on the input."""
    return [{"messages": [{"role": "user", "content": f"question {i}"},
                          {"role": "assistant", "content": json.dumps(
                              {"answer": i % 7, "source": "atlas-v2"})}]} for i in range(n)]


@pytest.fixture
def tiny_home(home, tiny_model_template):
    Catalog().add("tiny", tiny_model_template)
    return home


def _job(tmp_path, rows, **kw):
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = Files().create_from_path(p, "fine-tune").id
    job = Jobs().create(model="tiny", training_file=train, seed=1, **kw)
    status = JobRunner(Jobs().get(job.id), get_settings(), "test").run()
    assert status == "succeeded", Jobs().get(job.id).error
    return Jobs().get(job.id), Jobs().events(job.id)


def test_small_constant_field_set_trains_enough_steps_with_everything_auto(tiny_home, tmp_path):
    job, events = _job(tmp_path, constant_field_rows(12))
    resolved = job.hyperparameters["resolved"]
    assert (resolved["batch_size"], resolved["n_epochs"]) == (1, 9)
    steps = [e.data["step"] for e in events if e.type == "metrics"]
    assert len(steps) == resolved["total_steps"] >= 100
    warns = [e.message for e in events if e.level == "warn"]
    assert not any("optimiser steps" in w for w in warns), warns


def test_a_converged_job_has_no_convergence_warning(tiny_home, tmp_path):
    # the tiny random model learns little through LoRA in 100 steps; a full fine-tune at a
    # large learning rate learns the constant answer
    _, events = _job(tmp_path, constant_field_rows(12),
                     method={"type": "full"}, hyperparameters={"learning_rate_multiplier": 500})
    losses = [e.data["train_loss"] for e in events if e.type == "metrics"]
    assert len(losses) >= 100 and sum(losses[-10:]) < 0.2 * sum(losses[:10])
    warns = [e.message for e in events if e.level == "warn"]
    assert not any("converged" in w for w in warns), warns


def test_a_job_that_ends_far_from_converged_says_so(tiny_home, tmp_path):
    _, events = _job(tmp_path, constant_field_rows(12), hyperparameters={
        "n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 1e-4})
    warns = [e.message for e in events if e.level == "warn"]
    assert any("Only 12 optimiser steps" in w for w in warns), warns
    assert any("far from converged" in w and "n_epochs" in w for w in warns), warns
