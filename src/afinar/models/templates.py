"""Chat templates: render messages with the model's own template, find its end-of-turn tokens,
and fingerprint the template so training and serving can prove they use the same one."""

from __future__ import annotations

import hashlib
import json
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
    ids.update(_marker_ids(tokenizer))
    return sorted(ids)


def _marker_ids(tokenizer) -> list[int]:
    # Reading the vocabulary costs ~10 ms on a 49k-token tokenizer; validation calls this per
    # example, so the answer is kept on the tokenizer, keyed by what it depends on.
    tpl = getattr(tokenizer, "chat_template", None) or ""
    key = (hash(str(tpl)), tokenizer.eos_token)
    cached = getattr(tokenizer, "_afinar_eot", None)
    if cached and cached[0] == key:
        return cached[1]
    vocab = tokenizer.get_vocab()
    found = [int(vocab[m]) for m in _END_OF_TURN
             if m in vocab and (m in str(tpl) or m == tokenizer.eos_token)]
    tokenizer._afinar_eot = (key, found)
    return found


def content_text(content: Any) -> str:
    """Text of a message content: a string, or the text parts of a list (parts without a string
    ``text`` add nothing: rows read before validation may hold anything)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content
                   if isinstance(p, dict) and isinstance(p.get("text"), str))


def prepare_messages(tokenizer, messages: list[dict[str, Any]],
                     tools: list[dict] | None = None) -> tuple[list[dict], list[dict] | None]:
    """Messages in the shape the model's template can render, the same at training and serving.

    Content parts are joined to text and afinar-only keys (``weight``) dropped. A template that
    knows nothing of tools (SmolLM2's, like many small models') would drop tool calls silently or
    fail on ``content: null``; for those, tool calls are written into the assistant text in the
    widely used Hermes form (``<tool_call>{"name": ..., "arguments": ...}</tool_call>``) and the
    tool definitions go into the system message.
    """
    tpl = chat_template(tokenizer)
    native = "tool_calls" in tpl
    out: list[dict] = []
    for m in messages:
        role = m.get("role")
        text = content_text(m.get("content"))
        msg: dict[str, Any] = {"role": role, "content": text}
        if m.get("tool_calls"):
            if native:
                msg["tool_calls"] = m["tool_calls"]
            else:
                calls = []
                for c in m["tool_calls"]:
                    fn = c.get("function", {})
                    args = fn.get("arguments", "{}")
                    try:
                        args = json.loads(args) if isinstance(args, str) else args
                    except ValueError:
                        pass
                    calls.append("<tool_call>\n" + json.dumps(
                        {"name": fn.get("name"), "arguments": args}, ensure_ascii=False)
                        + "\n</tool_call>")
                msg["content"] = "\n".join(([text] if text else []) + calls)
        if role == "tool" and native and m.get("tool_call_id"):
            msg["tool_call_id"] = m["tool_call_id"]
        if m.get("name") and native:
            msg["name"] = m["name"]
        out.append(msg)
    if tools and "tools" not in tpl:
        spec = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
        preamble = ("You can call these tools:\n<tools>\n" + spec + "\n</tools>\nTo call one, "
                    'answer with <tool_call>{"name": ..., "arguments": {...}}</tool_call>.')
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + preamble}
        else:
            out.insert(0, {"role": "system", "content": preamble})
        tools = None
    return out, tools


def render_ids(tokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
               tools: list[dict] | None = None) -> list[int]:
    """Token ids of ``messages`` rendered by the model's own template."""
    chat_template(tokenizer)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise InvalidRequest(f"messages[{i}] needs a 'role'", param=f"messages[{i}]")
    messages, tools = prepare_messages(tokenizer, messages, tools)
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
    messages, tools = prepare_messages(tokenizer, messages, tools)
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
