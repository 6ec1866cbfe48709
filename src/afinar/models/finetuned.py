"""What a fine-tuned model is: a PEFT adapter (or a full model folder) plus
``afinar-manifest.json``, read here and nowhere else.

``traits(manifest)`` says what kind of artifact a fine-tune is (an adapter, virtual prompt tokens,
or full weights), whether it is served on its base's shared weights, whether it merges into them,
and what it was trained on. The training runner writes these facts into the manifest
(``"traits"``); older manifests have only the method's name, from which the same facts follow.
Callers ask the traits, never compare method names.

Loading checks the contract that breaks most fine-tunes in other tools: the chat template and
end-of-turn tokens at serving time must be those the model was trained with (the manifest's
template fingerprint, ``check_fingerprint``).

A basic piece: it imports no loader, engine or cache (the loader and the adapter hosts read it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afinar.errors import AfinarError
from afinar.models.templates import template_fingerprint

MANIFEST = "afinar-manifest.json"
ARTIFACTS = ("adapter", "prompt", "full")


class TemplateMismatch(AfinarError):
    code = "template_mismatch"
    http_status = 409


@dataclass(frozen=True)
class FineTuneTraits:
    artifact: str  # "adapter" (LoRA/DoRA weights), "prompt" (virtual tokens), "full" (weights)
    shares_base: bool  # served as an adapter on its base's shared weights
    mergeable: bool  # its weights merge into the base's (a merged export, a private copy)
    objective: str  # the objective it trained with (tuning.objectives): "sft", "dpo"
    data_kind: str  # what it trained on: "sft" (chat/completion), "text", "preference"


# Old manifests (no "traits"): the facts of each built-in method, from what it saves
# (tuning/methods/*.py): lora, dora, qlora and dpo save a PEFT LoRA adapter (dpo's policy is one);
# prompt_tuning saves PEFT virtual tokens; full saves a whole model folder; continued_pretraining
# saves a LoRA adapter, or a whole folder with its ``adapter: full`` option.
_ADAPTER = ("adapter", True, True)
_BY_METHOD: dict[str, tuple[tuple[str, bool, bool], str, str]] = {
    "lora": (_ADAPTER, "sft", "sft"),
    "dora": (_ADAPTER, "sft", "sft"),
    "qlora": (_ADAPTER, "sft", "sft"),
    "dpo": (_ADAPTER, "dpo", "preference"),
    "prompt_tuning": (("prompt", False, False), "sft", "sft"),
    "full": (("full", False, False), "sft", "sft"),
    "continued_pretraining": (_ADAPTER, "sft", "text"),  # the runner's: next-token loss
}


def traits(manifest: dict[str, Any]) -> FineTuneTraits:
    """What the fine-tune with this manifest is. ``manifest["traits"]`` when the runner wrote
    them; else derived from ``manifest["method"]`` (and its config); a manifest with neither (a
    registered adapter from elsewhere) is taken for a LoRA adapter on an SFT objective."""
    given = manifest.get("traits")
    if isinstance(given, dict):
        artifact = given.get("artifact")
        if artifact not in ARTIFACTS:
            raise ValueError(f"manifest traits: artifact must be one of {', '.join(ARTIFACTS)}, "
                             f"not {artifact!r}")
        return FineTuneTraits(artifact, bool(given.get("shares_base")),
                              bool(given.get("mergeable")), str(given.get("objective") or "sft"),
                              str(given.get("data_kind") or "sft"))
    method = manifest.get("method") or "lora"
    (artifact, shares, mergeable), objective, data_kind = _BY_METHOD.get(
        method, _BY_METHOD["lora"])
    if method == "continued_pretraining":
        options = (manifest.get("method_config") or {}).get(method) or {}
        if options.get("adapter") == "full":
            artifact, shares, mergeable = "full", False, False
    return FineTuneTraits(artifact, shares, mergeable, objective, data_kind)


def read_manifest(path: Path) -> dict:
    f = path / MANIFEST
    return json.loads(f.read_text()) if f.is_file() else {}


def check_fingerprint(manifest: dict, tokenizer, generation_config, model_id: str) -> None:
    want = manifest.get("template_fingerprint")
    if not want:
        return
    have = template_fingerprint(tokenizer, generation_config)
    diff = [k for k in ("template_sha256", "eos_token", "stop_token_ids") if want.get(k) != have.get(k)]
    if diff:
        raise TemplateMismatch(
            f"{model_id} was trained with another chat template or stop tokens ({', '.join(diff)} "
            "differ): serving it with this base would produce the wrong format or never stop")


__all__ = ["ARTIFACTS", "MANIFEST", "FineTuneTraits", "TemplateMismatch", "check_fingerprint",
           "read_manifest", "traits"]
