"""Fine-tuning the embedded model for real on the shared sarcasm task, where the tuned model must
beat the base model's accuracy. (The held-out format task, learned by a LoRA fine-tune, is
``tests/integration/test_eval_real.py``: the support tickets.)"""

import json
import random
from pathlib import Path

import pytest

from afinar.models import Catalog, Generator, SamplingParams, load_causal_lm
from afinar.settings import get_settings
from afinar.store.files import Files
from afinar.tuning import Jobs
from afinar.tuning.runner import JobRunner

pytestmark = pytest.mark.integration
BASE = "smollm2-135m-instruct"


def answers(model_id, examples, max_tokens):
    gen = Generator(load_causal_lm(Catalog().get(model_id)))
    return [gen.chat(ex["messages"][:-1], SamplingParams(temperature=0, max_tokens=max_tokens)
                     ).text.strip() for ex in examples]


def train(path: Path, **hp) -> str:
    f = Files().create_from_path(path, "fine-tune")
    job = Jobs().create(model=BASE, training_file=f.id, seed=0, hyperparameters=hp)
    assert JobRunner(Jobs().get(job.id), get_settings(), "test").run() == "succeeded", \
        Jobs().get(job.id).error
    return Jobs().get(job.id).fine_tuned_model


def _label(text: str) -> str | None:
    t = text.strip()
    return t[0] if t[:1] in ("0", "1") else None


def test_sarcasm_beats_the_base_model(home, shared_dir, tmp_path):
    src = shared_dir / "datasets" / "sarcasm"
    rows = src.joinpath("train.jsonl").read_text().splitlines()
    sample = random.Random(0).sample(rows, 600)
    (tmp_path / "train.jsonl").write_text("\n".join(sample) + "\n")
    test = [json.loads(x) for x in src.joinpath("test.jsonl").read_text().splitlines()]
    test = random.Random(1).sample(test, 200)
    gold = [ex["messages"][-1]["content"] for ex in test]

    def accuracy(model_id):
        preds = [_label(a) for a in answers(model_id, test, 3)]
        return sum(p == g for p, g in zip(preds, gold)) / len(gold), sum(p is None for p in preds)

    base_acc, base_unparsed = accuracy(BASE)
    tuned = train(tmp_path / "train.jsonl", n_epochs=2, batch_size=16,
                  learning_rate_multiplier=4)
    tuned_acc, tuned_unparsed = accuracy(tuned)
    print(f"\nsarcasm accuracy on 200 test headlines: base {base_acc:.3f} "
          f"({base_unparsed} unparsable), tuned {tuned_acc:.3f} ({tuned_unparsed} unparsable); "
          "always '0' scores 0.52 on the full test split")
    assert tuned_unparsed == 0
    assert tuned_acc > base_acc
    assert tuned_acc > 0.6  # measured 0.695 with these settings
