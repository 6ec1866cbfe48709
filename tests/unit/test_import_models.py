"""``afinar models add`` of models made elsewhere, on the tiny model: a PEFT adapter trained with
plain peft (no afinar code) is added and answers through the chat path exactly as plain peft
does; one trained with another chat template, or on a base the catalog lacks, is refused with
the reason; an Ollama models folder (blobs/ + manifests/) and a Modelfile are added with
Ollama's sampling, their TEMPLATE checked against the GGUF's chat template (a wrong one is
warned), Ollama adapter layers refused. The Ollama tests need llama.cpp's converter (for the
tiny GGUF) and skip, saying why, without it."""

import hashlib
import json
import shutil

import pytest

from afinar.models import Catalog, Generator, ModelCache, SamplingParams
from afinar.models.engines.llamacpp import unavailable_reason
from afinar.models.finetuned import MANIFEST, read_manifest, traits
from tests.helpers import home_at, run_cli

needs_convert = pytest.mark.skipif(unavailable_reason() is not None,
                                   reason=str(unavailable_reason()))
PROMPT = [{"role": "user", "content": "question 3"}]
ANSWER = "Red, blue and yellow."
GREEDY = SamplingParams(temperature=0, max_tokens=8)


@pytest.fixture(scope="module")
def imp_home(tiny_model_template, tmp_path_factory):
    """One AFINAR_HOME with ``tiny`` registered, shared by this module's tests."""
    root = tmp_path_factory.mktemp("import")
    with home_at(root / "home"):
        Catalog().add("tiny", tiny_model_template)
        yield root


@pytest.fixture(scope="module")
def plain_peft(imp_home, tiny_model_template):
    """A LoRA adapter of the tiny model made the way TRL/Axolotl/Unsloth leave one: plain
    peft's get_peft_model, a few optimiser steps, save_pretrained with the tokenizer; and the
    greedy answer plain peft gives with it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_template))
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_template), dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"],
                   task_type="CAUSAL_LM"))
    ids = torch.tensor([tok.apply_chat_template(
        [*PROMPT, {"role": "assistant", "content": ANSWER}], return_dict=True)["input_ids"]])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(15):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    out = imp_home / "trl-adapter"
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "README.md").write_text("---\nlibrary_name: peft\ntags:\n- trl\n- sft\n---\n")
    prompt = torch.tensor([tok.apply_chat_template(PROMPT, add_generation_prompt=True,
                                                   return_dict=True)["input_ids"]])
    model.eval()
    with torch.no_grad():
        gen = model.generate(input_ids=prompt, max_new_tokens=GREEDY.max_tokens,
                             do_sample=False, eos_token_id=tok.convert_tokens_to_ids(
                                 "<|im_end|>"), pad_token_id=tok.pad_token_id)
    return out, tok.decode(gen[0, prompt.shape[1]:], skip_special_tokens=True)


def test_a_plain_peft_adapter_is_added_and_served_like_afinars_own(plain_peft, capsys):
    folder, expected = plain_peft
    code, out, err = run_cli(capsys, "models", "add", "trl-colours", str(folder))
    assert code == 0, err
    assert "fine-tune of tiny" in out
    m = Catalog().get("trl-colours")
    assert m.format == "peft" and m.base_model == "tiny" and m.path != folder
    manifest = read_manifest(m.path)
    t = traits(manifest)
    assert (t.artifact, t.shares_base, t.mergeable, t.objective) == ("adapter", True, True, "sft")
    assert manifest["trained_with"] == "trl" and manifest["template_fingerprint"]
    got = Generator(ModelCache().get("trl-colours")).chat(PROMPT, GREEDY).text
    assert expected and got == expected  # served on the shared base as plain peft answers
    code, out, err = run_cli(capsys, "chat", "-m", "trl-colours", "question 3",
                             "--temperature", "0", "--max-tokens", str(GREEDY.max_tokens))
    assert code == 0 and expected in out, err


def test_an_adapter_trained_with_another_chat_template_is_refused(plain_peft, imp_home, capsys):
    from afinar.settings import get_settings

    folder = imp_home / "other-template"
    shutil.copytree(plain_peft[0], folder)
    for f in (folder / "chat_template.jinja", folder / "tokenizer_config.json"):
        if f.is_file() and "im_start" in f.read_text():
            f.write_text(f.read_text().replace("<|im_start|>", "<|im_start|> ", 1))
            break
    code, _, err = run_cli(capsys, "models", "add", "other", str(folder))
    assert code == 2 and err.startswith("error: the adapter was trained with another chat "
                                        "template") and "template_sha256" in err
    assert "other" not in [m.id for m in Catalog().list()]
    assert not (get_settings().models_dir / "imported" / "other").exists()


def test_an_adapter_on_an_unknown_base_needs_base(plain_peft, imp_home, capsys):
    folder = imp_home / "elsewhere"
    shutil.copytree(plain_peft[0], folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(
        {**cfg, "base_model_name_or_path": "someone/unknown-7b"}))
    code, _, err = run_cli(capsys, "models", "add", "elsewhere", str(folder))
    assert code == 2 and "'someone/unknown-7b' is not in the catalog" in err and "--base" in err
    code, out, err = run_cli(capsys, "models", "add", "elsewhere", str(folder), "--base", "tiny")
    assert code == 0 and "fine-tune of tiny" in out, err
    (folder / "adapter_model.safetensors").write_bytes(b"not safetensors")
    code, _, err = run_cli(capsys, "models", "add", "broken", str(folder), "--base", "tiny")
    assert code == 2 and err.startswith("error: PEFT cannot load the adapter on tiny")


def _tiny_gguf(imp_home, tiny_model_template):
    from afinar.models.gguf import convert_hf

    g = imp_home / "tiny-f32.gguf"
    if not g.is_file():
        convert_hf(tiny_model_template, g, "f32")
    return g


def _blob(root, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / digest.replace(":", "-")).write_bytes(data)
    return digest


def _ollama_model(root, name, tag, gguf, template, params, system=None, adapter=None):
    layers = [("model", gguf.read_bytes()), ("template", template.encode()),
              ("params", json.dumps(params).encode())]
    layers += [("system", system.encode())] if system else []
    layers += [("adapter", adapter)] if adapter else []
    manifest = {"schemaVersion": 2, "layers": [
        {"mediaType": f"application/vnd.ollama.image.{k}", "digest": _blob(root, v),
         "size": len(v)} for k, v in layers]}
    f = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(manifest))


@needs_convert
def test_an_ollama_models_folder_is_added_with_its_sampling_and_template_checked(
        imp_home, tiny_model_template, capsys):
    from transformers import AutoTokenizer

    from afinar.models.export.ollama import go_template

    tok = AutoTokenizer.from_pretrained(str(tiny_model_template))
    gguf = _tiny_gguf(imp_home, tiny_model_template)
    root = imp_home / "ollama-models"
    _ollama_model(root, "tiny", "latest", gguf, go_template(tok),
                  {"stop": ["<|im_end|>"], "temperature": 0.3, "top_k": 20})
    _ollama_model(root, "tiny", "bad", gguf, go_template(tok).replace("\n", " "),
                  {"stop": ["<|im_end|>", "###"]}, system="Be brief.")
    code, _, err = run_cli(capsys, "models", "add", "o-tiny", str(root))
    assert code == 2 and "holds 2 Ollama models (tiny:bad, tiny:latest)" in err
    code, out, err = run_cli(capsys, "models", "add", "o-tiny", str(root), "--ollama-model",
                             "tiny")
    assert code == 0 and "warning" not in out, out + err
    m = Catalog().get("o-tiny")
    assert m.format == "gguf" and m.info["ollama_model"] == "tiny:latest"
    assert Catalog().sampling_defaults("o-tiny") == {"temperature": 0.3, "top_k": 20.0}
    served = Generator(ModelCache().get("o-tiny")).chat(PROMPT, GREEDY).text
    assert served == Generator(ModelCache().get("tiny")).chat(PROMPT, GREEDY).text
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "bad"
    code, out, err = run_cli(capsys, "models", "add", "o-bad", str(manifest))  # one manifest
    assert code == 0, err
    assert Catalog().get("o-bad").info["ollama_model"] == "tiny:bad"
    assert "Ollama's TEMPLATE differs from the GGUF's chat template" in out
    assert "['###']" in out and "SYSTEM" in out


@needs_convert
def test_a_modelfile_from_a_gguf_is_added_and_ollama_adapters_are_refused(
        imp_home, tiny_model_template, capsys):
    gguf = _tiny_gguf(imp_home, tiny_model_template)
    d = imp_home / "modelfile"
    d.mkdir()
    shutil.copy2(gguf, d / "weights.gguf")
    (d / "Modelfile").write_text("FROM ./weights.gguf\nPARAMETER temperature 0.5\n")
    code, out, err = run_cli(capsys, "models", "add", "mf-tiny", str(d))
    assert code == 0 and "no Ollama TEMPLATE to check" in out, err
    assert Catalog().sampling_defaults("mf-tiny") == {"temperature": 0.5}
    (d / "Modelfile").write_text("FROM llama3.2\n")
    code, _, err = run_cli(capsys, "models", "add", "mf-name", str(d / "Modelfile"))
    assert code == 2 and "FROM llama3.2 is not a GGUF file" in err
    (d / "Modelfile").write_text("FROM ./weights.gguf\nADAPTER ./lora.gguf\n")
    code, _, err = run_cli(capsys, "models", "add", "mf-adapter", str(d))
    assert code == 2 and "ADAPTER line" in err
    root = imp_home / "ollama-adapter"
    _ollama_model(root, "ft", "latest", gguf, "{{ .Prompt }}", {}, adapter=b"GGUF lora")
    code, _, err = run_cli(capsys, "models", "add", "o-ft", str(root))
    assert code == 2 and "has an ADAPTER layer" in err
    assert not (Catalog().settings.models_dir / "imported" / "o-ft").exists()


def test_the_manifest_written_for_an_import_is_the_finetune_loader_s(plain_peft):
    """The imported copy holds what the fine-tune loader and the exporter read, and nothing
    that points back at the folder it came from (that folder may go away)."""
    m = Catalog().get("trl-colours")
    assert {p.name for p in m.path.iterdir()} >= {"adapter_config.json",
                                                  "adapter_model.safetensors", MANIFEST}
    moved = plain_peft[0].rename(plain_peft[0].with_name("moved"))
    try:
        got = Generator(ModelCache().get("trl-colours")).chat(PROMPT, GREEDY).text
    finally:
        moved.rename(plain_peft[0])
    assert got == plain_peft[1]
