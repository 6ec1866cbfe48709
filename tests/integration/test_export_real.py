"""A real fine-tune of the embedded SmolLM2 (a LoRA job on a small format task with a
validation file, four optimiser steps: well under two minutes of CPU) exported to Ollama
format and checked with llama.cpp: the f32 GGUF's greedy answers equal the transformers
fine-tune's (on the sample conversations and on the job's own validation prompts), the
Modelfile's TEMPLATE renders what the model was trained on and stops on its end-of-turn token;
its q4_k_m GGUF reports, on the job's validation examples, how much of what the fine-tune
changed survives quantisation."""

import json
import random

import pytest

from afinar.models import Catalog, Generator, SamplingParams, load_causal_lm
from afinar.models.engines.llamacpp import unavailable_reason
from afinar.models.export import export_model, verify_export
from afinar.settings import get_settings
from afinar.store.files import Files
from afinar.tuning import Jobs
from afinar.tuning.runner import JobRunner

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(unavailable_reason() is not None,
                                 reason=str(unavailable_reason()))]
BASE = "smollm2-135m-instruct"
FRUIT = ["apples", "pears", "plums", "lemons", "figs", "limes", "dates", "kiwis"]


def _rows(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        order, fruit, qty = rnd.randint(100, 999), rnd.choice(FRUIT), rnd.randint(2, 40)
        out.append({"messages": [
            {"role": "user", "content": f"Order {order}: {qty} {fruit}, please."},
            {"role": "assistant", "content": f"ORDER {order} | {fruit.upper()} | {qty}"}]})
    return out


def _fine_tune(tmp_path) -> str:
    for name, rows in (("train", _rows(16, 0)), ("valid", _rows(8, 1))):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    t = Files().create_from_path(tmp_path / "train.jsonl", "fine-tune")
    v = Files().create_from_path(tmp_path / "valid.jsonl", "fine-tune")
    job = Jobs().create(model=BASE, training_file=t.id, validation_file=v.id, seed=0,
                        hyperparameters={"n_epochs": 2, "batch_size": 8,
                                         "learning_rate_multiplier": 4})
    assert JobRunner(Jobs().get(job.id), get_settings(), "test").run() == "succeeded", \
        Jobs().get(job.id).error
    return Jobs().get(job.id).fine_tuned_model


def test_a_real_fine_tune_exports_to_ollama_and_checks_with_llama_cpp(home, tmp_path,
                                                                      monkeypatch):
    import torch

    from afinar.models.engines.llamacpp import LlamaCppModel
    from afinar.models.gguf import no_extra_buffers
    from afinar.models.loader import hf_folder
    from afinar.settings import reset_settings

    # this test's own home: no other worker takes its job over, so a step slower than the
    # default lease (a loaded CI machine) must not lose it
    monkeypatch.setenv("AFINAR_JOB_LEASE_S", "3600")
    reset_settings()
    ft = _fine_tune(tmp_path)  # 16 conversations, batch 8, 2 epochs: 4 optimiser steps
    out, checks = export_model(ft, "ollama", tmp_path / "ollama", quant="f32")
    by = {c.name: c for c in checks}
    print("\n" + "\n".join(f"  {c.name}: {c.detail}" for c in checks))
    assert all(c.ok for c in checks)
    assert "greedy 3/3" in by["llama.cpp greedy"].detail
    assert by["Modelfile TEMPLATE"].ok and by["stop tokens"].ok and by["Modelfile stop"].ok
    mf = (out / "Modelfile").read_text()
    assert mf.startswith("FROM ./model.gguf\n") and 'PARAMETER stop "<|im_end|>"' in mf
    assert "PARAMETER temperature 0.2" in mf  # SmolLM2's card, the fine-tune's default too

    # the job's own validation prompts: llama.cpp's greedy answers are the fine-tune's
    lm = load_causal_lm(Catalog().get(ft))
    want = [Generator(lm).chat(r["messages"][:1], SamplingParams(temperature=0, max_tokens=16))
            .text for r in _rows(8, 1)[:4]]
    config = hf_folder(Catalog().get(BASE))[0]  # config.json (a LoRA leaves it as it is)
    with no_extra_buffers():
        gguf = LlamaCppModel(out / "model.gguf", config, get_settings(), n_ctx=256)
    eot = lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    got = []
    for r in _rows(8, 1)[:4]:
        ids = lm.tokenizer.apply_chat_template(r["messages"][:1], add_generation_prompt=True,
                                               return_dict=True)["input_ids"]
        new = gguf.generate(torch.tensor([ids]), 16, eos_token_id=[eot])[0, len(ids):]
        got.append(lm.tokenizer.decode(new, skip_special_tokens=True))
    print(f"  validation answers: {got}")
    assert got == want
    assert [c.name for c in verify_export(out)] == [c.name for c in checks]

    _, q4 = export_model(ft, "gguf", tmp_path / "q4", quant="q4_k_m")
    kept = {c.name: c for c in q4}["fine-tune kept"]
    print(f"  q4_k_m: {kept.detail}")
    assert "of the job's validation examples" in kept.detail and " keeps " in kept.detail
    assert kept.warning == ("erases the fine-tune" in kept.detail)
