"""Every registered tuning method, table-driven (as PEFT tests its tuners): it trains two steps
on the tiny model through a real job with its own objective and data kind, saves, and the traits
its manifest carries are the method's and true of what it saved (a PEFT adapter, virtual tokens
or a whole model; mergeable ones merge to the same outputs). Plus the objective seam's
bookkeeping: OpenAI's method type, DPO's reference log-probabilities computed once and resumed
from the training state."""

import json

import pytest
import torch

from afinar.errors import InvalidRequest
from afinar.models import Catalog
from afinar.tuning import METHODS, OBJECTIVES, Jobs, get_method
from afinar.tuning.serialize import job_object
from tests.unit.test_tuning import (  # noqa: F401
    DATA,
    OPTIONS,
    run_job,
    tiny_home,
    upload,
    when_step,
)

TWO_STEPS = {"n_epochs": 1, "batch_size": 6, "learning_rate_multiplier": 5}
CUDA = torch.cuda.is_available()


def manifest_of(model_id: str) -> dict:
    return json.loads((Catalog().get(model_id).path / "afinar-manifest.json").read_text())


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_trains_saves_and_writes_its_traits(tiny_home, tmp_path, name):
    method = get_method(name, OPTIONS.get(name))
    if name == "qlora" and not CUDA:  # its CPU refusal: test_tuning.py
        pytest.skip("qlora needs a CUDA GPU (bitsandbytes)")
    cls = METHODS.get(name)
    assert method.objective in OBJECTIVES and method.data_kind in DATA
    train = upload(tmp_path, DATA[method.data_kind](12), "train.jsonl")
    job = Jobs().create(model="tiny", training_file=train,
                        method={"type": name, name: OPTIONS.get(name, {})},
                        hyperparameters=TWO_STEPS, seed=1)
    assert run_job(job) == "succeeded", Jobs().get(job.id).error
    done = Jobs().get(job.id)
    assert [e.data["step"] for e in Jobs().events(job.id) if e.type == "metrics"] == [1, 2]

    traits = manifest_of(done.fine_tuned_model)["traits"]
    assert traits == {"artifact": cls.artifact, "shares_base": cls.shares_base,
                      "mergeable": cls.mergeable, "objective": cls.objective,
                      "data_kind": cls.data_kind} == method.traits()
    assert traits["artifact"] in ("adapter", "prompt", "full")

    info = Catalog().get(done.fine_tuned_model)
    adapter_cfg = info.path / "adapter_config.json"
    if traits["artifact"] == "full":
        assert info.format == "hf" and info.base_model is None
        assert not adapter_cfg.exists() and (info.path / "tokenizer.json").is_file()
        assert not traits["shares_base"] and not traits["mergeable"]
    else:
        assert info.format == "peft" and info.base_model == "tiny"
        peft_type = json.loads(adapter_cfg.read_text())["peft_type"]
        assert peft_type == ("PROMPT_TUNING" if traits["artifact"] == "prompt" else "LORA")
    if traits["mergeable"]:
        _merges_to_the_same_outputs(info.path)

    obj = job_object(done)["method"]
    kind = OBJECTIVES.get(cls.objective).openai_type
    assert obj["type"] == kind and obj["afinar"]["method"] == name
    assert set(obj[kind]["hyperparameters"]) >= set(OBJECTIVES.get(cls.objective).hyperparameters)


def _merges_to_the_same_outputs(path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = Catalog().get("tiny").path
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(path))
    model.eval()
    with torch.no_grad():
        hosted = model(input_ids=ids).logits
        merged = model.merge_and_unload()(input_ids=ids).logits
    torch.testing.assert_close(hosted, merged, rtol=0, atol=1e-4)


def test_continued_pretraining_of_every_weight_saves_a_whole_model():
    m = get_method("continued_pretraining", {"adapter": "full"})
    assert m.traits() == {"artifact": "full", "shares_base": False, "mergeable": False,
                          "objective": "sft", "data_kind": "text"}
    assert get_method("continued_pretraining").traits()["artifact"] == "adapter"


def test_unknown_method_and_bad_options_are_one_clear_error():
    with pytest.raises(InvalidRequest) as e:
        get_method("lorra")
    assert e.value.param == "method" and "did you mean 'lora'" in e.value.message
    assert "known: continued_pretraining, dora, dpo" in e.value.message
    with pytest.raises(InvalidRequest, match="bad options for method lora") as e:
        get_method("lora", {"rank": 4})
    assert e.value.param == "method"


def test_dpo_reports_beta_and_resumes_with_its_reference_log_probs(tiny_home, tmp_path):
    """DPO's reference log-probabilities are computed once before the first step and saved
    with the training state: a paused job resumes without computing them again and ends with
    the weights and validation losses of an uninterrupted run."""
    from tests.unit.test_tuning import _same

    train = upload(tmp_path, DATA["preference"](24), "t.jsonl")
    val = upload(tmp_path, DATA["preference"](6), "v.jsonl")
    hp = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 5, "beta": 0.2,
          "eval_every_steps": 2, "eval_sample_size": 3}

    def job():
        return Jobs().create(model="tiny", training_file=train, validation_file=val,
                             method={"type": "dpo"}, hyperparameters=hp, seed=4)

    ref = job()
    assert run_job(ref) == "succeeded"
    paused = job()
    t = when_step(paused.id, 3, Jobs().pause)
    assert run_job(paused) == "paused"
    t.join()
    Jobs().resume(paused.id)
    assert run_job(paused) == "succeeded"

    def weights(j):
        from safetensors.torch import load_file

        path = Catalog().get(Jobs().get(j.id).fine_tuned_model).path
        return load_file(str(path / "adapter_model.safetensors"))

    _same(weights(ref), weights(paused))

    def losses(j):
        return [(e.data["step"], e.data.get("valid_loss"), e.data.get("full_valid_loss"))
                for e in Jobs().events(j.id) if e.type == "metrics"]

    assert losses(ref) == losses(paused)
    computed = [e.message for e in Jobs().events(paused.id) if "reference log-prob" in e.message]
    assert len(computed) == 1 and "of 30 examples" in computed[0]  # 24 pairs + 6 validation

    hyper = job_object(Jobs().get(ref.id))["method"]["dpo"]["hyperparameters"]
    assert hyper["beta"] == 0.2
    sft = Jobs().create(model="tiny", training_file=upload(tmp_path, DATA["sft"](12), "s.jsonl"))
    obj = job_object(sft)["method"]
    assert obj["type"] == "supervised" and "beta" not in obj["supervised"]["hyperparameters"]
