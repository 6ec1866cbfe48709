"""``afinar models export``/``verify`` on the tiny model: every format exports and verifies; the
adapter loads with plain PEFT; the f32 GGUF's greedy outputs through llama.cpp equal the
transformers model's; a broken template (Modelfile TEMPLATE or exported tokenizer) fails
verification with the reason. The GGUF tests skip (and say why) without llama.cpp."""

import json

import pytest

from afinar.models import Catalog
from afinar.models.engines.llamacpp import unavailable_reason
from afinar.models.export import ExportFailed, export_model, verify_export
from afinar.models.export.gotemplate import ollama_data, render
from afinar.models.export.source import resolve
from afinar.models.export.verify import check_modelfile
from afinar.settings import get_settings
from tests.unit.test_adapters import ANSWERS, train_adapter

needs_llama = pytest.mark.skipif(unavailable_reason() is not None,
                                 reason=str(unavailable_reason()))


@pytest.fixture(scope="module")
def ft_home(tiny_model_template, tmp_path_factory):
    """One AFINAR_HOME with ``tiny`` and a LoRA fine-tune of it, shared by this module's tests
    (each exports into its own folder): training once keeps the module fast."""
    from afinar.settings import reset_settings
    from afinar.store.db import reset_databases

    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AFINAR_HOME", str(root / "home"))
        mp.delenv("AFINAR_DATABASE_URL", raising=False)
        mp.setenv("AFINAR_THREADS", "2")
        reset_settings()
        reset_databases()
        Catalog().add("tiny", tiny_model_template)
        yield train_adapter("ft:tiny:afinar:colours:00000001", ANSWERS["colours"],
                            root / "adapter", steps=10)
        reset_settings()
        reset_databases()


@pytest.fixture
def ft(ft_home):
    return ft_home


def test_go_template_subset_renders_ollama_syntax():
    tpl = ('{{- range $i, $m := .Messages }}{{ if eq $m.Role "user" }}U:{{ .Content }}'
           '{{ else }}{{ $m.Role }}={{ $m.Content }}{{ end }}'
           '{{ if and (eq (len (slice $.Messages $i)) 1) (ne $m.Role "assistant") }} >'
           '{{ end }}\n{{- end }}')
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    assert render(tpl, ollama_data(msgs)) == "system=sU:hi >"


def test_adapter_export_loads_with_plain_peft(ft, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from afinar.models import load_causal_lm

    out, checks = export_model(ft, "adapter", tmp_path / "out")
    assert {c.name for c in checks} >= {"template", "adapter loads with plain PEFT"}
    cfg = json.loads((out / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"],
                                                dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    ids = tok.apply_chat_template([{"role": "user", "content": "question 3"}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    served = load_causal_lm(Catalog().get(ft))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, served.model(ids).logits, atol=1e-4)
    assert verify_export(out)[0].ok


def test_merged_export_of_a_base_model(ft, tmp_path):
    out, checks = export_model("tiny", "merged", tmp_path / "m")
    assert all(c.ok for c in checks) and (out / "model.safetensors").is_file()


def test_adapter_format_refuses_a_base_model(ft, tmp_path):
    with pytest.raises(Exception, match="not an adapter fine-tune"):
        export_model("tiny", "adapter", tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_an_altered_tokenizer_template_fails_verification(ft, tmp_path):
    out, _ = export_model(ft, "merged", tmp_path / "m")
    # the newline after the role dropped from the chat template, wherever transformers wrote it
    f = next(p for p in (out / "chat_template.jinja", out / "tokenizer_config.json")
             if p.is_file() and "message['role']" in p.read_text())
    text = f.read_text()
    broken = text.replace("message['role'] + '\n'", "message['role'] + ' '").replace(
        "message['role'] + '\\n'", "message['role'] + ' '")
    assert broken != text
    f.write_text(broken)
    with pytest.raises(ExportFailed, match="template"):
        verify_export(out)


@needs_llama
def test_ollama_export_of_a_fine_tune_verifies_and_gguf_greedy_equals_transformers(ft, tmp_path):
    out, checks = export_model(ft, "ollama", tmp_path / "o", quant="f32")
    by = {c.name: c for c in checks}
    assert by["llama.cpp greedy"].ok and "greedy 3/3" in by["llama.cpp greedy"].detail
    assert by["Modelfile TEMPLATE"].ok and by["stop tokens"].ok
    # the tiny tokenizer's pre-tokenizer is unknown to llama.cpp: its non-ASCII text splits
    # differently there, which is reported as a warning
    assert by["GGUF tokenizer"].warning and "sample(s) 3 " in by["GGUF tokenizer"].detail
    mf = (out / "Modelfile").read_text()
    assert mf.startswith("FROM ./model.gguf\n") and 'PARAMETER stop "<|im_end|>"' in mf
    # a TEMPLATE missing the newline after the role is caught without Ollama
    (out / "Modelfile").write_text(mf.replace("{{ $m.Role }}\n", "{{ $m.Role }}", 1)
                                   .replace('"user" }}<|im_start|>user\n',
                                            '"user" }}<|im_start|>user', 1))
    fp = json.loads((out / "afinar-export.json").read_text())["template_fingerprint"]
    bad = {c.name: c for c in check_modelfile(out, resolve(ft, get_settings()), fp)}
    assert not bad["Modelfile TEMPLATE"].ok and "renders" in bad["Modelfile TEMPLATE"].detail
    assert bad["Modelfile stop"].ok


def test_cli_export_and_verify(ft, tmp_path, capsys):
    from tests.helpers import run_cli

    out = tmp_path / "cli-adapter"
    code, stdout, err = run_cli(capsys, "models", "export", ft, "--format", "adapter",
                                "--out", str(out))
    assert code == 0, err
    assert "ok template" in stdout and (out / "adapter_model.safetensors").is_file()
    code, stdout, err = run_cli(capsys, "models", "verify", str(out))
    assert code == 0 and "verified" in stdout, err
    (out / "tokenizer_config.json").write_text("{}")
    code, stdout, err = run_cli(capsys, "models", "verify", str(out))
    assert code == 2 and err.startswith("error: ") and "template" in err
    code, _, err = run_cli(capsys, "models", "export", ft, "--format", "zip", "--out",
                           str(tmp_path / "z"))
    assert code == 2 and "unknown format 'zip'" in err


@needs_llama
def test_gguf_q8_0_export_of_a_base_model_reports_agreement(ft, tmp_path):
    out, checks = export_model("tiny", "gguf", tmp_path / "g", quant="q8_0")
    assert (out / "model.gguf").is_file() and not (out / "Modelfile").exists()
    agreement = {c.name: c for c in checks}["llama.cpp agreement"]
    rate = float(agreement.detail.split("agreement ")[1].split()[0])
    assert 0 <= rate <= 1 and agreement.warning == (rate < 0.95)
