"""Chat templates: render messages with the model's own template, find its end-of-turn tokens,
and fingerprint the template so training and serving can prove they use the same one."""

from __future__ import annotations

import hashlib
from typing import Any

from afinar.errors import InvalidRequest

# End-of-turn markers of common template families; whichever the tokenizer knows are stop tokens.
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>",
                "</s>", "<|end_of_text|>")


def chat_template(tokenizer) -> str:
    tpl = getattr(tokenizer, "chat_template", None)
    if not tpl:
        raise InvalidRequest(
            "this model has no chat template (a base model?): chat needs one; use a text "
            "completion instead, or register an instruction-tuned model", code="no_chat_template",
            param="model",
        )
    return tpl if isinstance(tpl, str) else str(tpl)


def end_of_turn_ids(tokenizer, generation_config=None) -> list[int]:
    """Token ids that end an assistant turn: the tokenizer's EOS, the generation config's EOS and
    the known end-of-turn markers that this tokenizer has as single tokens."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gc_eos = getattr(generation_config, "eos_token_id", None) if generation_config else None
    if isinstance(gc_eos, int):
        ids.add(gc_eos)
    elif gc_eos:
        ids.update(int(i) for i in gc_eos)
    vocab = tokenizer.get_vocab()
    tpl = getattr(tokenizer, "chat_template", None) or ""
    for marker in _END_OF_TURN:
        if marker in vocab and (marker in tpl or marker == tokenizer.eos_token):
            ids.add(int(vocab[marker]))
    return sorted(ids)


def render_ids(tokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
               tools: list[dict] | None = None) -> list[int]:
    """Token ids of ``messages`` rendered by the model's own template."""
    chat_template(tokenizer)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise InvalidRequest(f"messages[{i}] needs a 'role'", param=f"messages[{i}]")
    enc = tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=True,
        return_dict=True,
    )
    ids = enc["input_ids"]
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return [int(i) for i in ids]


def render_text(tokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                tools: list[dict] | None = None) -> str:
    chat_template(tokenizer)
    return tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False
    )


def template_fingerprint(tokenizer, generation_config=None) -> dict[str, Any]:
    """What must be identical between training and serving: template text, EOS/stop tokens, BOS.

    Stored in fine-tuned model manifests and checked when they load.
    """
    tpl = getattr(tokenizer, "chat_template", None) or ""
    eot = end_of_turn_ids(tokenizer, generation_config)
    return {
        "template_sha256": hashlib.sha256(str(tpl).encode()).hexdigest(),
        "eos_token": tokenizer.eos_token,
        "bos_token": tokenizer.bos_token,
        "stop_token_ids": eot,
        "stop_tokens": tokenizer.convert_ids_to_tokens(eot),
    }
