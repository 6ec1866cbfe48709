"""The objective seam: an objective defined here (label-smoothed cross-entropy), registered as
one class, and a method naming it train through the unchanged runner and trainer. The first
step's reported loss is this objective's loss of the untouched base on the batches the trainer
handed it, so the trainer ran it and nothing else; the manifest and the job object follow."""

import json

import pytest
import torch
import torch.nn.functional as F

from afinar.models import Catalog
from afinar.tuning import METHODS, OBJECTIVES, Jobs
from afinar.tuning.methods.lora import Lora
from afinar.tuning.objectives import EvalSums, Objective, PartLoss, StepPart, register
from afinar.tuning.objectives.base import logits_at_targets, make_batch
from afinar.tuning.objectives.sft import split_by_tokens
from afinar.tuning.serialize import job_object
from tests.unit.test_tuning import chat_rows, run_job, tiny_home, upload  # noqa: F401

EPS = 0.2


def smoothed(model, batch):
    logits, sel = logits_at_targets(model, batch)
    t = batch.targets[sel]
    loss = F.cross_entropy(logits.float(), t, reduction="sum", label_smoothing=EPS)
    return loss, int((logits.argmax(-1) == t).sum())


class Smoothed(Objective):
    name = "test_smoothed"
    steps: list[list[list]] = []  # per optimizer step, the keys of each of its parts
    losses = 0  # parts the trainer asked for a loss of

    def parts(self, batches):
        c = self.ctx
        out = []
        for items in batches:
            for part in split_by_tokens(items, c.hp.max_tokens_per_forward):
                b = make_batch([s for _, s in part], c.pad_id, c.device)
                out.append(StepPart(part, b.n_targets, int(b.mask.sum()), b))
        Smoothed.steps.append([[k for k, _ in p.items] for p in out])
        return out

    def loss(self, model, part):
        Smoothed.losses += 1
        loss, ok = smoothed(model, part.batch)
        return PartLoss(loss, float(loss.detach()), ok)

    def evaluate(self, model, items):
        b = make_batch([s for _, s in items], self.ctx.pad_id, self.ctx.device)
        loss, ok = smoothed(model, b)
        return EvalSums(float(loss), ok, b.n_targets)


class SmoothedLora(Lora):
    name = "test_smoothed_lora"
    objective = "test_smoothed"


@pytest.fixture
def plugged(monkeypatch):
    """The two classes registered as a plugin registers them; the registries have no removal,
    so the test puts their entries back afterwards."""
    monkeypatch.setattr(OBJECTIVES, "_entries", dict(OBJECTIVES._entries))
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    register(Smoothed)
    METHODS.register()(SmoothedLora)
    Smoothed.steps, Smoothed.losses = [], 0
    yield


def test_a_registered_objective_trains_through_the_unchanged_trainer(plugged, tiny_home,
                                                                     tmp_path):
    assert "test_smoothed" in OBJECTIVES and "test_smoothed_lora" in METHODS
    rows = chat_rows(12)
    train = upload(tmp_path, rows, "t.jsonl")
    val = upload(tmp_path, chat_rows(3, prefix="other"), "v.jsonl")
    job = Jobs().create(model="tiny", training_file=train, validation_file=val,
                        method={"type": "test_smoothed_lora"}, seed=2,
                        hyperparameters={"n_epochs": 1, "batch_size": 6})
    assert run_job(job) == "succeeded", Jobs().get(job.id).error
    done = Jobs().get(job.id)
    hist = [e.data for e in Jobs().events(job.id) if e.type == "metrics"]
    assert len(hist) == 2 and "full_valid_loss" in hist[-1]
    assert len(Smoothed.steps) == 2 and Smoothed.losses == sum(map(len, Smoothed.steps))
    assert sorted(i for part in sum(Smoothed.steps, []) for _, i in part) == list(range(12))

    # step 1 ran on the base itself (a fresh LoRA adds zero): its loss, recomputed here
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from afinar.store.files import Files
    from afinar.tuning.samples import load_samples

    base = Catalog().get("tiny").path
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    samples, _ = load_samples(Files().path(train), tok, "sft", 2048)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    mine, plain, units = 0.0, 0.0, 0
    with torch.no_grad():
        for keys in Smoothed.steps[0]:
            b = make_batch([samples[i] for _, i in keys], pad, "cpu")
            mine += float(smoothed(model, b)[0])
            logits, sel = logits_at_targets(model, b)
            plain += float(F.cross_entropy(logits, b.targets[sel], reduction="sum"))
            units += b.n_targets
    assert hist[0]["train_loss"] == pytest.approx(mine / units, rel=1e-5)
    assert hist[0]["train_loss"] != pytest.approx(plain / units, rel=1e-4)  # not plain SFT

    manifest = json.loads((Catalog().get(done.fine_tuned_model).path
                           / "afinar-manifest.json").read_text())
    assert manifest["traits"]["objective"] == "test_smoothed"
    assert manifest["traits"]["artifact"] == "adapter"
    assert job_object(done)["method"]["type"] == "supervised"
