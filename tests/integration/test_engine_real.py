"""The llama.cpp engine on the embedded SmolLM2 against the transformers reference (greedy).

- f32 weights (``AFINAR_LLAMA_WEIGHTS=f32``, the reference's exact weights): the same text on
  every prompt.
- q8_0 weights (the default): llama.cpp also rounds the activations to 8 bits in its q8_0
  matmuls, and this small model's greedy choices are often near-ties, so once one token flips the
  continuation differs (measured: 5 of 18 prompts with exactly the reference's text, 624 of 644
  teacher-forced top tokens equal; f16 17 of 18, f32 18 of 18; about 6 minutes on a loaded 2-core
  machine; on the 9 prompts CI runs: 3 of 9 exact, 226 of 233 top tokens equal, the merged
  LoRA 345 of 351, f32 9 of 9, in 2.5 minutes on a quiet one). So q8_0 is checked one step
  at a time: the reference's own text is fed to both engines
  (teacher forcing) and llama.cpp's top token must equal transformers' top token at at least
  ``MIN_TOP1`` of all positions; the count of prompts with exact text is printed
  (``pytest -s``), not asserted.
- f16 weights: the number of exact prompts is printed (with ``AFINAR_TEST_F16=1``).
- a LoRA fine-tune (random, non-zero r=16 adapter on all linear layers) served as a merged q8_0
  GGUF (the default ``AFINAR_LLAMA_ADAPTERS=merged``) against PEFT on the fp32 base: the same
  thresholds.

Needs the ``llama`` extra and the conversion scripts (``make``); skipped without them.
"""

from __future__ import annotations

import json
import os

import pytest

from afinar.models.engines.llamacpp import unavailable_reason
from tests.helpers import home_at, link_conversion

pytestmark = pytest.mark.integration

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
           "List three primary colours.", "Explain what a GPU is in one sentence.",
           "How do I install a package on Debian?", "Say hello in Spanish.",
           "Give me a tip for writing clean code.", "What does a compiler do?",
           "Name a famous painter.", "What is 12 times 7?", "Describe a cat in five words.",
           "Why is the sky blue?", "Translate 'thank you' into French.",
           "What is photosynthesis?", "Suggest a name for a pet goldfish.",
           "What is the boiling point of water?", "Write one sentence about autumn.",
           "What is a prime number?"]
# CI minutes: every other prompt (9) by default; all 18 with AFINAR_TEST_ALL_PROMPTS=1 (the
# numbers in this docstring were measured on all 18)
PROMPTS = PROMPTS if os.environ.get("AFINAR_TEST_ALL_PROMPTS") else PROMPTS[::2]
TOKENS = 48
MIN_TOP1 = 0.95  # of all teacher-forced positions, q8_0's top token equals the reference's


@pytest.fixture(scope="module")
def home(tmp_path_factory, embedded_conversion):
    with home_at(tmp_path_factory.mktemp("engine") / "home") as h:
        link_conversion(h, embedded_conversion)
        yield


def _outputs(cache, model_id, settings=None) -> list[str]:
    from afinar.models import Generator, SamplingParams

    p = SamplingParams(temperature=0, max_tokens=TOKENS)
    gen = Generator(cache.get(model_id, settings=settings))
    return [gen.chat([{"role": "user", "content": text}], p).text for text in PROMPTS]


def _top1_agreement(ref_lm, llama_lm, texts) -> tuple[int, int]:
    """Feed prompt + the reference's answer to both; count positions whose top token agrees."""
    import llama_cpp
    import torch

    from afinar.models.templates import render_ids

    agree = total = 0
    model = llama_lm.model
    for prompt, answer in zip(PROMPTS, texts):
        ids = render_ids(ref_lm.tokenizer, [{"role": "user", "content": prompt}])
        ans = ref_lm.tokenizer(answer, add_special_tokens=False)["input_ids"]
        seq = ids + ans
        with ref_lm.use() as m, torch.inference_mode():  # its adapter active, for a fine-tune
            want = m(torch.tensor([seq])).logits[0].argmax(-1).tolist()
        with llama_lm.lock:
            llama_lm.activate()
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(model.llama._ctx.ctx), True)
            model._decode(ids, 0)
            for i in range(len(ids) - 1, len(seq)):
                agree += int(model._logits().argmax()) == want[i]
                total += 1
                if i + 1 < len(seq):
                    model._decode([seq[i + 1]], i + 1)
    return agree, total


def _compare(name, ref_lm, llama_lm, want, got) -> None:
    exact = sum(w == g for w, g in zip(want, got))
    agree, total = _top1_agreement(ref_lm, llama_lm, want)
    print(f"\n{name}: {exact}/{len(PROMPTS)} prompts with the reference's exact text; top token "
          f"equal to the reference's at {agree}/{total} teacher-forced positions "
          f"({agree / total:.3f})")
    assert agree >= MIN_TOP1 * total, (agree, total)


@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_llama_engine_against_the_transformers_reference(home, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from afinar.models import Catalog, ModelCache
    from afinar.models.finetuned import MANIFEST
    from afinar.models.loader import hf_folder
    from afinar.models.templates import template_fingerprint
    from afinar.settings import get_settings
    from afinar.store.db import get_database
    from afinar.store.tables import ModelRecord

    base = "smollm2-135m-instruct"
    ref = ModelCache(max_models=1)
    ref_lm = ref.get(base)
    want = _outputs(ref, base)

    s = get_settings()
    f32 = s.model_copy(update={"engine": "llama.cpp", "llama_weights": "f32"})
    got = _outputs(ModelCache(max_models=1), base, f32)
    print(f"\nf32: {sum(w == g for w, g in zip(want, got))}/{len(PROMPTS)} exact")
    assert got == want

    if os.environ.get("AFINAR_TEST_F16"):  # printed, not asserted: off in CI to save its minute
        f16 = s.model_copy(update={"engine": "llama.cpp", "llama_weights": "f16"})
        got = _outputs(ModelCache(max_models=1), base, f16)
        print(f"\nf16: {sum(w == g for w, g in zip(want, got))}/{len(PROMPTS)} exact")

    q8 = s.model_copy(update={"engine": "llama.cpp", "llama_weights": "q8_0"})
    q8_cache = ModelCache(max_models=1)
    _compare("q8_0 base", ref_lm, q8_cache.get(base, settings=q8), want,
             _outputs(q8_cache, base, q8))

    # a LoRA fine-tune: PEFT on the fp32 base (reference) against the merged q8_0 GGUF
    folder, _ = hf_folder(Catalog().get(base))
    torch.manual_seed(7)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(str(folder)), LoraConfig(
        r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM",
        init_lora_weights=False))
    for n, p in peft.named_parameters():  # small enough to keep the answers readable
        if "lora_B" in n:
            p.data *= 0.05
    out = tmp_path / "ft"
    peft.save_pretrained(out)
    (out / MANIFEST).write_text(json.dumps({
        "base_model": base, "method": "lora",
        "template_fingerprint": template_fingerprint(ref_lm.tokenizer, peft.generation_config)}))
    mid = f"ft:{base}:afinar:engine:00000001"
    with get_database(s.db_url).session() as db:
        db.merge(ModelRecord(id=mid, kind="chat", format="peft", path=str(out),
                             base_model=base, owned_by="user", info={}))
    ref_ft = ModelCache(max_models=1)
    want_ft = _outputs(ref_ft, mid)
    assert want_ft != want  # the adapter changes the answers
    _compare("q8_0 merged LoRA", ref_ft.get(mid), q8_cache.get(mid, settings=q8), want_ft,
             _outputs(q8_cache, mid, q8))
