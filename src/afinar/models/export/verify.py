"""Checks every export passes before it is called done (and ``afinar models verify PATH``):

- template contract: the exported tokenizer has the template fingerprint the model was trained
  with, and renders the sample conversations to the same token ids as the reference tokenizer;
- GGUF (gguf, ollama): greedy outputs through llama.cpp equal the transformers model's for f32
  (for f16/q8_0 the teacher-forced top-token agreement is reported, with a warning under 0.95);
  every end-of-turn token is an end-of-generation token in the GGUF (what stops llama.cpp and
  Ollama), with the same text as in the Hugging Face vocabulary;
- ollama: the Modelfile's TEMPLATE, rendered by ``gotemplate`` for the sample conversations
  (with its SYSTEM where a conversation has none, as Ollama does), equals the Hugging Face chat
  template's rendering, and its ``PARAMETER stop`` lines are the end-of-turn tokens;
- adapter: plain ``peft.PeftModel.from_pretrained`` loads it on the base and gives the logits of
  the fine-tune; merged: transformers loads it and gives the logits of the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from afinar.models.export.source import SAMPLES, ExportFailed, Source, read_export_manifest

MAX_NEW = 12
AGREEMENT_WARN = 0.95


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False


def _ids(tok, msgs, gen=True) -> list[int]:
    enc = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen,
                                  return_dict=True)["input_ids"]
    return [int(i) for i in (enc[0] if enc and isinstance(enc[0], list) else enc)]


def _conversations() -> list[tuple[list[dict], bool]]:
    return [(s, True) for s in SAMPLES] + [(SAMPLES[-1][:2], False)]


def check_template(path: Path, src: Source, fp: dict) -> Check:
    from transformers import AutoTokenizer

    from afinar.models.templates import template_fingerprint

    exported = AutoTokenizer.from_pretrained(str(path))
    have = template_fingerprint(exported)
    diff = [k for k in ("template_sha256", "eos_token") if have.get(k) != fp.get(k)]
    if set(fp.get("stop_tokens") or []) - set(have.get("stop_tokens") or []):
        diff.append("stop_tokens")
    if diff:
        return Check("template", False, f"the exported tokenizer's {', '.join(diff)} differ "
                     "from those the model was trained with")
    ref = src.tokenizer()
    for i, (msgs, gen) in enumerate(_conversations()):
        if _ids(exported, msgs, gen) != _ids(ref, msgs, gen):
            return Check("template", False, f"sample conversation {i + 1} renders to other "
                         "token ids with the exported tokenizer")
    return Check("template", True, f"{len(_conversations())} conversations, same token ids")


def _reference(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def _greedy(model, ids: list[int], eos: list[int]) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False,
                             eos_token_id=eos, pad_token_id=eos[0])
    return out[0, len(ids):].tolist()


def check_gguf(gguf: Path, hf: Path, src: Source, quant: str, fp: dict) -> list[Check]:
    import torch

    from afinar.models.engines.llamacpp import LlamaCppModel, require_llama_cpp

    llama_cpp = require_llama_cpp()
    tok = src.tokenizer()
    eos = list(fp["stop_token_ids"])
    ref = _reference(hf)
    lm = LlamaCppModel(gguf, hf, src.settings, n_ctx=256)
    vocab = llama_cpp.llama_model_get_vocab(lm.llama.model)
    checks = []
    bad = [t for t, i in zip(fp["stop_tokens"], eos, strict=True)
           if not llama_cpp.llama_vocab_is_eog(vocab, i)
           or llama_cpp.llama_vocab_get_text(vocab, i).decode() != t]
    checks.append(Check("stop tokens", not bad,
                        f"{', '.join(bad)} would not end generation in llama.cpp" if bad else
                        f"{', '.join(fp['stop_tokens'])} end generation"))
    # Ollama and llama.cpp's own tools tokenize text with the GGUF's tokenizer (afinar's engine
    # passes token ids, so it never does): a pre-tokenizer llama.cpp does not know is written as
    # "default" and may split some text differently; reported, not fatal
    split = [i + 1 for i, (msgs, _) in enumerate(_conversations()[:3])
             if lm.llama.tokenize(tok.apply_chat_template(msgs, tokenize=False,
                                                          add_generation_prompt=True).encode(),
                                  add_bos=False, special=True) != _ids(tok, msgs)]
    checks.append(Check("GGUF tokenizer", True, (
        f"llama.cpp's (Ollama's) splits sample(s) {', '.join(map(str, split))} "
        "differently") if split else "llama.cpp's (Ollama's) gives the same ids",
        warning=bool(split)))
    same = agree = total = 0
    for msgs, _ in _conversations()[:3]:
        ids = _ids(tok, msgs)
        want = _greedy(ref, ids, eos)
        got = lm.generate(torch.tensor([ids]), MAX_NEW, eos_token_id=eos)[0, len(ids):].tolist()
        same += got == want
        # teacher-forced: llama.cpp's top token at each step of the reference's greedy path
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(lm.llama._ctx.ctx), True)
        lm._decode(ids, 0)
        for k, t in enumerate(want):
            agree += int(lm._logits().argmax()) == t
            total += 1
            if k + 1 < len(want):
                lm._decode([t], len(ids) + k)
    rate = agree / max(total, 1)
    detail = f"greedy {same}/3 as transformers, top-token agreement {rate:.3f}"
    if quant == "f32":
        checks.append(Check("llama.cpp greedy", same == 3, detail))
    else:
        checks.append(Check("llama.cpp agreement", True, detail + (
            f" (under {AGREEMENT_WARN}: {quant} changes outputs)"
            if rate < AGREEMENT_WARN else ""), warning=rate < AGREEMENT_WARN))
    return checks


def check_modelfile(path: Path, src: Source, fp: dict) -> list[Check]:
    from afinar.models.export.gotemplate import TemplateError, ollama_data, render
    from afinar.models.export.ollama import MODELFILE, parse_modelfile

    mf = parse_modelfile((path / MODELFILE).read_text())
    checks = []
    if mf.get("from") != "./model.gguf" or not (path / "model.gguf").is_file():
        checks.append(Check("Modelfile", False, "FROM is not ./model.gguf beside it"))
    stops = mf["parameters"].get("stop", [])
    checks.append(Check("Modelfile stop", sorted(stops) == sorted(fp["stop_tokens"]),
                        f"{stops}, end-of-turn tokens {fp['stop_tokens']}"))
    tok = src.tokenizer()
    system = mf.get("system")
    for i, (msgs, _) in enumerate(_conversations()[:3]):
        if system and not any(m["role"] == "system" for m in msgs):
            msgs = [{"role": "system", "content": system}, *msgs]
        want = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        try:
            got = render(mf.get("template", ""), ollama_data(msgs, system))
        except TemplateError as e:
            return [*checks, Check("Modelfile TEMPLATE", False, e.message)]
        if got != want:
            return [*checks, Check("Modelfile TEMPLATE", False,
                                   f"sample conversation {i + 1} renders {got!r}, the chat "
                                   f"template renders {want!r}")]
    return [*checks, Check("Modelfile TEMPLATE", True,
                           "renders the samples as the chat template")]


def _logits_close(a, b, what: str) -> Check:
    diff = float((a - b).abs().max())
    return Check(what, diff < 1e-4, f"logits differ by at most {diff:.2e}")


def check_adapter(path: Path, src: Source) -> Check:
    import torch
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
        keys, meta = list(f.keys()), f.metadata() or {}
    odd = [k for k in keys if "lora_" not in k and "modules_to_save" not in k
           and "prompt_embeddings" not in k]
    if odd or set(meta) - {"format"}:
        return Check("adapter", False, f"adapter_model.safetensors holds non-PEFT entries: "
                     f"{(odd or sorted(meta))[:3]}")
    ids = torch.tensor([_ids(src.tokenizer(), SAMPLES[-1])])
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(
        str(src.base_folder), dtype=torch.float32), str(path)).eval()
    ours = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(
        str(src.base_folder), dtype=torch.float32), str(src.info.path)).eval()
    with torch.no_grad():
        return _logits_close(plain(ids).logits, ours(ids).logits,
                             "adapter loads with plain PEFT")


def check_merged(path: Path, src: Source, hf: Path) -> Check:
    import torch

    ids = torch.tensor([_ids(src.tokenizer(), SAMPLES[-1])])
    with torch.no_grad():
        return _logits_close(_reference(path)(ids).logits, _reference(hf)(ids).logits,
                             "merged loads with transformers")


def verify(path: Path, src: Source, hf: Path | None = None) -> list[Check]:
    """Run the checks for the export in ``path``; raise ``ExportFailed`` naming every failure."""
    import tempfile

    path = Path(path)
    data = read_export_manifest(path)
    fmt, fp = data["format"], data["template_fingerprint"]
    checks = [check_template(path, src, fp)]
    with tempfile.TemporaryDirectory(dir=src.settings.models_dir) as work:
        if fmt in ("gguf", "ollama", "merged") and hf is None:
            hf = src.hf_folder(Path(work))
        if fmt in ("gguf", "ollama"):
            checks += check_gguf(path / data["gguf"], hf, src, data["quant"], fp)
        if fmt == "ollama":
            checks += check_modelfile(path, src, fp)
        if fmt == "adapter":
            checks.append(check_adapter(path, src))
        if fmt == "merged":
            checks.append(check_merged(path, src, hf))
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ExportFailed(f"{path} failed verification: "
                           + "; ".join(f"{c.name}: {c.detail}" for c in failed))
    return checks
