"""Did fine-tuning cost the model its general ability? Base vs fine-tuned on text and questions
outside the domain: perplexity on a general held-out text and accuracy on a small general
question set (shipped in ``evals/data``; both replaceable in the config). A fine-tuned model is
flagged when its perplexity rises by more than ``threshold`` (relative) or its accuracy drops by
more than ``threshold`` (absolute)."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from afinar.evals.metrics import normalize
from afinar.models.generation import Generator, SamplingParams
from afinar.models.loader import LoadedModel

WINDOW = 512  # tokens per perplexity window


def _data(name: str, override: str | None) -> str:
    if override:
        return Path(override).read_text(encoding="utf-8")
    return resources.files("afinar.evals").joinpath("data", name).read_text(encoding="utf-8")


def perplexity(lm: LoadedModel, text: str) -> float:
    """exp(mean next-token loss) over ``text`` in non-overlapping windows."""
    import torch

    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    total, count = 0.0, 0
    # ``use``: exclusive, with this model's adapter selected (adapters share their base)
    with lm.use() as model, torch.inference_mode():
        for i in range(0, len(ids) - 1, WINDOW):
            window = torch.tensor([ids[i:i + WINDOW + 1]], device=lm.device)
            if window.shape[1] < 2:
                break
            logits = model(input_ids=window[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1), reduction="sum")
            total += float(loss)
            count += window.shape[1] - 1
    return math.exp(total / max(count, 1))


def general_accuracy(lm: LoadedModel, qa: list[dict[str, Any]]) -> tuple[float, list[bool]]:
    gen = Generator(lm)
    params = SamplingParams(temperature=0, max_tokens=24)
    right = []
    for row in qa:
        text = gen.chat([{"role": "user", "content": row["question"]}], params).text
        said = f" {normalize(text)} "
        right.append(any(f" {normalize(a)} " in said for a in row["answers"]))
    return sum(right) / len(right), right


def check(load, pairs: list[tuple[str, str]], threshold: float, text_file: str | None = None,
          qa_file: str | None = None, progress=None) -> list[dict[str, Any]]:
    """``pairs``: (fine-tuned id, base id). ``load``: model id -> LoadedModel."""
    text = _data("general.txt", text_file)
    qa = [json.loads(x) for x in _data("general_qa.jsonl", qa_file).splitlines() if x.strip()]
    measured: dict[str, tuple[float, float]] = {}

    def measure(model_id: str) -> tuple[float, float]:
        if model_id not in measured:
            lm = load(model_id)
            measured[model_id] = (perplexity(lm, text), general_accuracy(lm, qa)[0])
            if progress:
                progress(model_id)
        return measured[model_id]

    out = []
    for tuned, base in pairs:
        ppl_b, acc_b = measure(base)
        ppl_t, acc_t = measure(tuned)
        rise, drop = ppl_t / ppl_b - 1, acc_b - acc_t
        reasons = []
        if rise > threshold:
            reasons.append(f"perplexity on general text rose {rise:.0%} ({ppl_b:.1f} -> "
                           f"{ppl_t:.1f})")
        if drop > threshold:
            reasons.append(f"general-question accuracy fell {drop:.0%} ({acc_b:.0%} -> "
                           f"{acc_t:.0%})")
        out.append({"model": tuned, "base_model": base, "perplexity_base": ppl_b,
                    "perplexity_tuned": ppl_t, "accuracy_base": acc_b, "accuracy_tuned": acc_t,
                    "n_questions": len(qa), "threshold": threshold, "flagged": bool(reasons),
                    "reasons": reasons})
    return out
