"""Checks every export passes before it is called done (and ``afinar models verify PATH``):

- template contract: the exported tokenizer has the template fingerprint the model was trained
  with, and renders the sample conversations to the same token ids as the reference tokenizer;
- GGUF (gguf, ollama): greedy outputs through llama.cpp equal the transformers model's for f32
  and f16; for quantised weights the teacher-forced top-token agreement is reported (q8_0 must
  reach 0.95; q4_k_m and the others are warned under it), and for a fine-tune, on its job's own
  validation examples, the share of the top tokens the fine-tune changed from its base that the
  quantised GGUF keeps (a warning under 0.5: the quantisation erases the fine-tune); every
  end-of-turn token is an end-of-generation token in the GGUF (what stops llama.cpp and
  Ollama), with the same text as in the Hugging Face vocabulary;
- each format's own checks (``Exporter.checks``): the Modelfile's TEMPLATE and stop lines
  (``ollama``), plain PEFT loading (``adapter``), transformers loading (``merged``).
"""

from __future__ import annotations

from pathlib import Path

from afinar.models.export.formats import EXACT_QUANTS, EXPORTERS, Check
from afinar.models.export.source import (
    SAMPLES,
    ExportFailed,
    Source,
    job_examples,
    read_export_manifest,
)
from afinar.models.gguf import no_extra_buffers

MAX_NEW = 12
AGREEMENT_WARN = 0.95  # q8_0 must reach it; other quantisations under it are warned
KEPT_WARN = 0.5  # a quantisation keeping less of what the fine-tune changed erases it
MAX_TARGET = 48  # answer tokens the fine-tune check reads


def sample_ids(tok, msgs, gen=True) -> list[int]:
    enc = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen,
                                  return_dict=True)["input_ids"]
    return [int(i) for i in (enc[0] if enc and isinstance(enc[0], list) else enc)]


def conversations() -> list[tuple[list[dict], bool]]:
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
    for i, (msgs, gen) in enumerate(conversations()):
        if sample_ids(exported, msgs, gen) != sample_ids(ref, msgs, gen):
            return Check("template", False, f"sample conversation {i + 1} renders to other "
                         "token ids with the exported tokenizer")
    return Check("template", True, f"{len(conversations())} conversations, same token ids")


def reference_model(folder: Path):
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
    ref = reference_model(hf)
    with no_extra_buffers():
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
    split = [i + 1 for i, (msgs, _) in enumerate(conversations()[:3])
             if lm.llama.tokenize(tok.apply_chat_template(msgs, tokenize=False,
                                                          add_generation_prompt=True).encode(),
                                  add_bos=False, special=True) != sample_ids(tok, msgs)]
    checks.append(Check("GGUF tokenizer", True, (
        f"llama.cpp's (Ollama's) splits sample(s) {', '.join(map(str, split))} "
        "differently") if split else "llama.cpp's (Ollama's) gives the same ids",
        warning=bool(split)))
    same = agree = total = 0
    for msgs, _ in conversations()[:3]:
        ids = sample_ids(tok, msgs)
        want = _greedy(ref, ids, eos)
        got = lm.generate(torch.tensor([ids]), MAX_NEW, eos_token_id=eos)[0, len(ids):].tolist()
        same += got == want
        # teacher-forced: llama.cpp's top token at each step of the reference's greedy path
        top = teacher_forced_top(lm, ids, want)
        agree += sum(a == b for a, b in zip(top, want, strict=True))
        total += len(want)
    rate = agree / max(total, 1)
    detail = f"greedy {same}/3 as transformers, top-token agreement {rate:.3f}"
    if quant in EXACT_QUANTS:
        checks.append(Check("llama.cpp greedy", same == 3, detail))
    elif quant == "q8_0":
        checks.append(Check("llama.cpp agreement", rate >= AGREEMENT_WARN, detail + (
            f" (q8_0 must reach {AGREEMENT_WARN})" if rate < AGREEMENT_WARN else "")))
    else:
        checks.append(Check("llama.cpp agreement", True, detail + (
            f" (under {AGREEMENT_WARN}: {quant} changes outputs)"
            if rate < AGREEMENT_WARN else ""), warning=rate < AGREEMENT_WARN))
    if quant not in EXACT_QUANTS and src.untuned_folder() is not None:
        examples, what = job_examples(src)
        checks.append(fine_tune_kept(src, ref, lm, examples, what, quant))
    return checks


def teacher_forced_top(lm, prompt: list[int], target: list[int]) -> list[int]:
    """llama.cpp's top token before each token of ``target``, fed ``prompt`` + ``target``."""
    import numpy as np

    from afinar.models.engines.llamacpp import require_llama_cpp

    llama_cpp = require_llama_cpp()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(lm.llama._ctx.ctx), True)
    lm._decode(prompt, 0)
    top = []
    for k, t in enumerate(target):
        top.append(int(np.argmax(lm._logits())))
        if k + 1 < len(target):
            lm._decode([t], len(prompt) + k)
    return top


def kept_rate(base_top: list[int], ft_top: list[int], quant_top: list[int]) -> tuple[int, int]:
    """Of the positions where the fine-tune's top token differs from its base's (what training
    changed), how many the quantised model keeps: (changed, kept)."""
    changed = [(f, q) for b, f, q in zip(base_top, ft_top, quant_top, strict=True) if f != b]
    return len(changed), sum(f == q for f, q in changed)


def fine_tune_kept(src: Source, ref, lm, examples: list[list[dict]], what: str,
                   quant: str) -> Check:
    """Whether the quantised GGUF keeps the fine-tune's behaviour: teacher-forced on the
    answers of ``examples``, the share of the positions where the fine-tune's top token
    differs from the base model's at which the GGUF's top token is the fine-tune's; under
    ``KEPT_WARN`` the quantisation is said to erase the fine-tune (a warning)."""
    import torch

    name = "fine-tune kept"
    if not examples:
        return Check(name, True, f"not measured ({what} in the fine-tune's manifest)")
    tok, base = src.tokenizer(), reference_model(src.untuned_folder())
    changed = kept = 0
    for msgs in examples:
        prompt = sample_ids(tok, msgs[:-1])
        full = sample_ids(tok, msgs, gen=False)
        if full[:len(prompt)] != prompt or len(full) <= len(prompt):
            continue
        target = full[len(prompt):][:MAX_TARGET]
        ids = torch.tensor([prompt + target])
        span = slice(len(prompt) - 1, len(prompt) - 1 + len(target))
        with torch.no_grad():
            b = base(ids).logits[0, span].argmax(-1).tolist()
            f = ref(ids).logits[0, span].argmax(-1).tolist()
        c, k = kept_rate(b, f, teacher_forced_top(lm, prompt, target))
        changed, kept = changed + c, kept + k
    n = f"{len(examples)} of {what}"
    if not changed:
        return Check(name, True, f"the fine-tune keeps its base's top tokens on {n}: "
                     "nothing to lose")
    rate = kept / changed
    detail = (f"{quant} keeps {kept}/{changed} ({rate:.2f}) of the top tokens the fine-tune "
              f"changed, on {n}")
    if rate < KEPT_WARN:
        detail += f": {quant} erases the fine-tune's behaviour (use q8_0 or f16)"
    return Check(name, True, detail, warning=rate < KEPT_WARN)


def logits_close(a, b, what: str) -> Check:
    diff = float((a - b).abs().max())
    return Check(what, diff < 1e-4, f"logits differ by at most {diff:.2e}")


def verify(path: Path, src: Source, hf: Path | None = None) -> list[Check]:
    """Run the checks for the export in ``path`` (the template contract, then its format's);
    raise ``ExportFailed`` naming every failure."""
    import tempfile

    path = Path(path)
    data = read_export_manifest(path)
    exporter = EXPORTERS.get(data["format"])()
    checks = [check_template(path, src, data["template_fingerprint"])]
    with tempfile.TemporaryDirectory(dir=src.settings.models_dir) as work:
        if exporter.needs_hf and hf is None:
            hf = src.hf_folder(Path(work))
        checks += exporter.checks(path, src, data, hf)
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ExportFailed(f"{path} failed verification: "
                           + "; ".join(f"{c.name}: {c.detail}" for c in failed))
    return checks
