"""``afinar models export``/``verify`` on the tiny model: every format exports and verifies; the
adapter loads with plain PEFT; the f32/f16 GGUF's greedy outputs through llama.cpp equal the
transformers model's; q8_0 reaches the agreement bar; q4_k_m comes from llama.cpp's quantizer;
a quantised fine-tune reports how much of its behaviour it keeps; a broken template (Modelfile
TEMPLATE or exported tokenizer) fails verification with the reason. The GGUF tests skip (and
say why) without llama.cpp."""

import json

import pytest

from afinar.models import Catalog
from afinar.models.engines.llamacpp import unavailable_reason
from afinar.cli.models_cmd import _formats_help
from afinar.models.export import EXPORTERS, QUANTS, ExportFailed, export_model, verify_export
from afinar.models.export.gotemplate import ollama_data, render
from afinar.models.export.source import resolve
from afinar.models.export.verify import fine_tune_kept, job_examples, kept_rate
from afinar.models.export.ollama import check_modelfile
from afinar.settings import get_settings
from tests.helpers import home_at
from tests.unit.test_adapters import ANSWERS, train_adapter

needs_llama = pytest.mark.skipif(unavailable_reason() is not None,
                                 reason=str(unavailable_reason()))


@pytest.fixture(scope="module")
def ft_home(tiny_model_template, tmp_path_factory):
    """One AFINAR_HOME with ``tiny`` and a LoRA fine-tune of it, shared by this module's tests
    (each exports into its own folder): training once keeps the module fast."""
    root = tmp_path_factory.mktemp("export")
    with home_at(root / "home"):
        Catalog().add("tiny", tiny_model_template)
        yield train_adapter("ft:tiny:afinar:colours:00000001", ANSWERS["colours"],
                            root / "adapter", steps=10)


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
    assert code == 2 and "unknown exporter 'zip'" in err and "known: adapter" in err


@needs_llama
def test_gguf_q8_0_export_of_a_base_model_reaches_the_agreement_bar(ft, tmp_path):
    out, checks = export_model("tiny", "gguf", tmp_path / "g", quant="q8_0")
    assert (out / "model.gguf").is_file() and not (out / "Modelfile").exists()
    agreement = {c.name: c for c in checks}["llama.cpp agreement"]
    rate = float(agreement.detail.split("agreement ")[1].split()[0])
    assert agreement.ok and rate >= 0.95
    assert "fine-tune kept" not in {c.name for c in checks}  # a base model has none to keep


def _exporter_case(name):
    cls = EXPORTERS.get(name)
    marks = [needs_llama] if cls.uses_quant else []
    return pytest.param(name, marks=marks, id=name)


# every registered format (plugins included), with the quantisation it is exercised in: gguf
# through llama.cpp's quantizer (q4_k_m), ollama in f16 (greedy must equal transformers)
QUANT_FOR = {"gguf": "q4_k_m", "ollama": "f16"}


@pytest.mark.parametrize("fmt", [_exporter_case(n) for n in EXPORTERS.names()])
def test_every_registered_exporter_exports_a_fine_tune_that_verifies(ft, tmp_path, fmt):
    cls = EXPORTERS.get(fmt)
    assert cls.name == fmt and cls.help and fmt in _formats_help()
    quant = QUANT_FOR.get(fmt, "f32") if cls.uses_quant else None
    out, checks = export_model(ft, fmt, tmp_path / fmt, quant=quant)
    data = json.loads((out / "afinar-export.json").read_text())
    assert data["format"] == fmt and data["model"] == ft and data.get("quant") == quant
    assert checks[0].name == "template" and all(c.ok for c in checks)
    assert len(checks) > 1  # the format's own checks ran, not only the template contract
    assert [c.name for c in verify_export(out)] == [c.name for c in checks]
    if quant == "q4_k_m":
        from gguf import GGUFReader

        ftype = GGUFReader(str(out / "model.gguf")).fields["general.file_type"].contents()
        assert ftype == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M, written by llama.cpp's quantizer
        kept = {c.name: c for c in checks}["fine-tune kept"]
        assert "not measured" in kept.detail  # this fine-tune's manifest names no job data


def test_quantisation_options_are_checked_before_any_model_loads(capsys, tmp_path):
    from afinar.models.export import check_options
    from tests.helpers import run_cli

    assert check_options("gguf", None)[1] == "f32"
    assert check_options("ollama", "Q4_K_M")[1] == "q4_k_m"
    for q in QUANTS:
        assert check_options("gguf", q)[1] == q
    code, _, err = run_cli(capsys, "models", "export", "nope", "--format", "gguf", "--quant",
                           "q3", "--out", str(tmp_path / "x"))
    assert code == 2 and err.startswith("error: unknown quantisation 'q3'; known: f32, f16")
    assert "q4_k_m" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "models", "export", "nope", "--format", "adapter",
                           "--quant", "q8_0", "--out", str(tmp_path / "x"))
    assert code == 2 and "--quant applies to GGUF weights" in err
    assert not (tmp_path / "x").exists()


def test_kept_rate_counts_only_the_positions_the_fine_tune_changed():
    base, tuned = [1, 2, 3, 4, 5], [1, 9, 3, 8, 7]
    assert kept_rate(base, tuned, [1, 9, 3, 8, 7]) == (3, 3)
    assert kept_rate(base, tuned, [1, 2, 0, 4, 5]) == (3, 0)  # back to the base: erased
    assert kept_rate(base, base, [0, 0, 0, 0, 0]) == (0, 0)


def test_job_examples_are_the_validation_file_then_the_training_file(ft, tmp_path):
    from afinar.store.blobs import BlobStore

    src = resolve(ft, get_settings())
    assert job_examples(src) == ([], "no job examples")
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}]} for i in range(12)]
    text = "\n".join(json.dumps(r) for r in [{"prompt": "x"}, *rows]) + "\nnot json\n"
    digest = BlobStore(get_settings().blobs_dir).put_bytes(text.encode()).digest
    src.manifest = {**src.manifest, "datasets": {"training_file": digest}}
    examples, what = job_examples(src, limit=5)
    assert what == "the job's training examples" and len(examples) == 5
    assert examples[0][-1] == {"role": "assistant", "content": "a0"}
    src.manifest["datasets"]["validation_file"] = digest
    assert job_examples(src)[1] == "the job's validation examples"
    # the job's system prompt (the Modelfile's SYSTEM): the one every training row starts with
    assert src.system_prompt() is None
    system = {"role": "system", "content": "Answer in French."}
    same = "\n".join(json.dumps({"messages": [system, *r["messages"]]}) for r in rows)
    src.manifest["datasets"]["training_file"] = BlobStore(
        get_settings().blobs_dir).put_bytes(same.encode()).digest
    assert src.system_prompt() == "Answer in French."
    mixed = same + "\n" + json.dumps(rows[0])
    src.manifest["datasets"]["training_file"] = BlobStore(
        get_settings().blobs_dir).put_bytes(mixed.encode()).digest
    assert src.system_prompt() is None


@needs_llama
def test_a_quantised_fine_tune_reports_what_it_keeps_on_the_job_examples(ft, tmp_path):
    from afinar.models.engines.llamacpp import LlamaCppModel
    from afinar.models.export.gguf_format import write_gguf
    from afinar.models.export.verify import reference_model
    from afinar.models.gguf import no_extra_buffers
    from tests.unit.test_adapters import PROMPT

    src = resolve(ft, get_settings())
    hf = src.hf_folder(tmp_path)
    gguf = write_gguf(src, tmp_path / "q.gguf", "q4_0", tmp_path)
    with no_extra_buffers():
        lm = LlamaCppModel(gguf, hf, src.settings, n_ctx=256)
    examples = [[*PROMPT, {"role": "assistant", "content": ANSWERS["colours"]}]]
    check = fine_tune_kept(src, reference_model(hf), lm, examples, "the job's validation "
                           "examples", "q4_0")
    kept, changed = map(int, check.detail.split("keeps ")[1].split()[0].split("/"))
    assert check.ok and 0 < changed and 0 <= kept <= changed  # 10 steps changed its answer
    assert check.warning == (kept / changed < 0.5)
    assert ("erases the fine-tune" in check.detail) == check.warning
