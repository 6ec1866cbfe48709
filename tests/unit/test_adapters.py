"""Many fine-tuned models on one base: trained LoRA adapters are hosted on the shared
base weights; interleaved concurrent requests for different adapters (and the base) each get
exactly their model's output; the adapter LRU evicts and reloads correctly; the template check
still applies."""

import json
from pathlib import Path

import pytest
import torch

from afinar.models import Catalog, Generator, ModelCache, SamplingParams, load_causal_lm
from afinar.models.adapters import shares_base
from afinar.models.finetuned import TemplateMismatch
from tests.helpers import all_at_once

PROMPT = [{"role": "user", "content": "question 3"}]
GREEDY = SamplingParams(temperature=0, max_tokens=10)
ANSWERS = {"colours": "Red, blue and yellow.", "debian": "Debian is a free operating system."}


def train_adapter(model_id: str, answer: str, out: Path, steps: int = 30, seed: int = 0) -> str:
    """A LoRA fine-tune of ``tiny`` saved as the runner saves one (the lora method's own
    ``build``/``save``, the manifest with the template fingerprint) and registered as a model
    like the runner registers it; trained directly (no job) so that it takes a second."""
    from transformers import AutoModelForCausalLM

    from afinar.models.finetuned import MANIFEST
    from afinar.models.templates import template_fingerprint
    from afinar.store.db import get_database
    from afinar.store.tables import ModelRecord
    from afinar.tuning.methods import BuildContext, get_method

    base = Catalog().get("tiny")
    tok = load_causal_lm(base).tokenizer
    torch.manual_seed(seed)
    method = get_method("lora")
    model = method.build(AutoModelForCausalLM.from_pretrained(base.path),
                         BuildContext(base.path, tok, "cpu"))
    ids = torch.tensor([tok.apply_chat_template(
        [*PROMPT, {"role": "assistant", "content": answer}], tokenize=True, return_dict=True,
        )["input_ids"]])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    method.save(model, out, tok)
    (out / MANIFEST).write_text(json.dumps({
        "base_model": "tiny", "method": "lora", "method_config": {"type": "lora"},
        "template_fingerprint": template_fingerprint(tok, model.generation_config)}))
    with get_database(Catalog().settings.db_url).session() as s:
        s.add(ModelRecord(id=model_id, kind="chat", format="peft", path=str(out),
                          base_model="tiny", owned_by="user", info={"test": True}))
    return model_id


@pytest.fixture
def two_adapters(home, tiny_model_template, tmp_path):
    """Two LoRA fine-tunes of ``tiny`` that answer the same prompt differently."""
    Catalog().add("tiny", tiny_model_template)
    return {name: train_adapter(f"ft:tiny:afinar:{name}:{i:08d}", answer, tmp_path / name, seed=i)
            for i, (name, answer) in enumerate(ANSWERS.items())}


def solo(model_id: str) -> str:
    """The reference: the model loaded on its own (adapter merged into a private base copy)."""
    return Generator(load_causal_lm(Catalog().get(model_id))).chat(PROMPT, GREEDY).text


def test_concurrent_requests_for_different_adapters_never_bleed(two_adapters):
    a, b = two_adapters["colours"], two_adapters["debian"]
    assert shares_base(Catalog().get(a)) and shares_base(Catalog().get(b))
    want = {m: solo(m) for m in (a, b, "tiny")}
    assert len(set(want.values())) == 3, f"the adapters must answer differently: {want}"

    cache = ModelCache(max_models=1, max_adapters=2)
    lms = {m: cache.get(m) for m in (a, b, "tiny")}
    assert lms[a].model is lms[b].model is lms["tiny"].model  # one copy of the base weights
    assert lms[a].lock is lms["tiny"].lock
    assert lms[a].loaded_from == "adapter" and lms[a].adapter != lms[b].adapter

    order = [a, b, "tiny"] * 8  # interleaved: each request's neighbours use other weights
    got: list[tuple[str, str]] = []
    all_at_once(lambda m: got.append((m, Generator(cache.get(m)).chat(PROMPT, GREEDY).text)),
                order)
    assert len(got) == len(order)
    wrong = [(m, text) for m, text in got if text != want[m]]
    assert not wrong, f"outputs that are not their model's own: {wrong}"
    assert cache.adapters("tiny").loads == 2  # no reloads: both fit


def test_adapter_lru_evicts_and_reloads(two_adapters):
    a, b = two_adapters["colours"], two_adapters["debian"]
    want = {m: solo(m) for m in (a, b)}
    cache = ModelCache(max_models=1, max_adapters=1)
    lm_a = cache.get(a)
    host = cache.adapters("tiny")
    assert host.loaded == [lm_a.adapter] and host.loads == 1 and host.evictions == 0
    lm_b = cache.get(b)
    assert host.loaded == [lm_b.adapter] and host.evictions == 1
    assert lm_a.adapter not in host.peft.peft_config  # deleted from the model, not just unlisted
    # A caller still holding the evicted model gets it back, reloaded, under the lock.
    assert Generator(lm_a).chat(PROMPT, GREEDY).text == want[a]
    assert host.loaded == [lm_a.adapter] and host.loads == 3 and host.evictions == 2
    assert Generator(cache.get(b)).chat(PROMPT, GREEDY).text == want[b]
    assert host.loads == 4 and host.evictions == 3


def test_lru_keeps_the_most_recently_used(two_adapters, tmp_path):
    """Three adapters (a checkpoint id is one too) on a cache of two: the least recent goes."""
    a, b = two_adapters["colours"], two_adapters["debian"]
    ckpt = train_adapter(f"{a}:ckpt-step-10", ANSWERS["colours"], tmp_path / "ckpt", steps=10)
    assert shares_base(Catalog().get(ckpt))
    cache = ModelCache(max_models=1, max_adapters=2)
    lm = {m: cache.get(m) for m in (a, b)}
    cache.get(a)  # a is now more recent than b
    lm[ckpt] = cache.get(ckpt)
    host = cache.adapters("tiny")
    assert host.loaded == [lm[a].adapter, lm[ckpt].adapter] and host.evictions == 1
    assert Generator(lm[ckpt]).chat(PROMPT, GREEDY).text == solo(ckpt)


def test_settings_bound_the_adapters_and_the_template_check_applies(two_adapters, monkeypatch):
    from afinar.settings import reset_settings

    a, b = two_adapters["colours"], two_adapters["debian"]
    monkeypatch.setenv("AFINAR_MAX_ADAPTERS", "1")
    reset_settings()
    cache = ModelCache(max_models=1)
    cache.get(a)
    cache.get(b)
    assert cache.adapters("tiny").evictions == 1
    manifest = Catalog().get(a).path / "afinar-manifest.json"
    data = json.loads(manifest.read_text())
    data["template_fingerprint"]["template_sha256"] = "0" * 64
    manifest.write_text(json.dumps(data))
    with pytest.raises(TemplateMismatch, match="another chat template"):
        ModelCache().get(a)


def test_traits_come_from_the_manifest_or_from_an_old_manifest_s_method():
    from afinar.models.finetuned import FineTuneTraits, traits

    written = {"artifact": "prompt", "shares_base": False, "mergeable": False,
               "objective": "sft", "data_kind": "sft"}
    # the runner's traits win over the method's name
    assert traits({"method": "lora", "traits": written}) == FineTuneTraits(**written)
    old = {m: traits({"method": m}) for m in ("lora", "dora", "qlora", "dpo", "prompt_tuning",
                                              "full", "continued_pretraining")}
    assert {m for m, t in old.items() if t.artifact == "adapter" and t.shares_base
            and t.mergeable} == {"lora", "dora", "qlora", "dpo", "continued_pretraining"}
    assert (old["prompt_tuning"].artifact, old["prompt_tuning"].shares_base,
            old["prompt_tuning"].mergeable) == ("prompt", False, False)
    assert (old["full"].artifact, old["full"].shares_base) == ("full", False)
    assert (old["dpo"].objective, old["dpo"].data_kind) == ("dpo", "preference")
    assert (old["continued_pretraining"].objective, old["continued_pretraining"].data_kind) == \
        ("sft", "text")  # what the runner writes for it (tuning/methods)
    cpt_full = {"method": "continued_pretraining",
                "method_config": {"type": "continued_pretraining",
                                  "continued_pretraining": {"adapter": "full"}}}
    assert traits(cpt_full).artifact == "full" and not traits(cpt_full).shares_base
    assert traits({}).artifact == "adapter"  # an adapter registered from elsewhere
    with pytest.raises(ValueError, match="artifact"):
        traits({"traits": {"artifact": "weights"}})


def test_an_adapter_whose_traits_do_not_share_the_base_loads_on_its_own(two_adapters):
    a = two_adapters["colours"]
    manifest = Catalog().get(a).path / "afinar-manifest.json"
    data = json.loads(manifest.read_text())
    data["traits"] = {"artifact": "adapter", "shares_base": False, "mergeable": True,
                      "objective": "sft", "data_kind": "sft"}
    manifest.write_text(json.dumps(data))
    assert not shares_base(Catalog().get(a))
    cache = ModelCache(max_models=2)
    lm = cache.get(a)
    assert lm.adapter is None and lm.model is not cache.get("tiny").model  # a private copy
    assert cache.adapters("tiny") is None
    assert Generator(lm).chat(PROMPT, GREEDY).text == solo(a)


def test_an_old_manifest_s_traits_are_those_the_runner_writes_now():
    """The fallback for manifests without "traits" gives what each built-in method's
    ``traits()`` writes (tuning/methods), continued pretraining's ``adapter: full`` included."""
    from afinar.models.finetuned import _BY_METHOD, traits
    from afinar.tuning.methods import get_method

    for name in _BY_METHOD:
        assert traits({"method": name}) == traits({"traits": get_method(name).traits()}), name
    config = {"adapter": "full"}
    old = {"method": "continued_pretraining",
           "method_config": {"type": "continued_pretraining", "continued_pretraining": config}}
    assert traits(old) == traits({"traits": get_method("continued_pretraining", config).traits()})
