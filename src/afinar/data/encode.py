"""Examples to token ids and loss masks, exactly as training will see them.

The mask marks the *trained* tokens: each assistant turn with weight 1 (the default), from its
first token through its end-of-turn token (so the model learns to stop), never the system, user
or tool tokens, nor the template's separators. Spans are found by rendering the conversation
prefix by prefix with the model's own chat template (a template that renders turns in order makes
each prefix a prefix of the whole), then mapped to tokens through the tokenizer's character
offsets. This is the part the field gets wrong most often (TRL #1550, axolotl #1761), so it is
computed here once and shared by validation, previews and the training collator.
"""

from __future__ import annotations

from dataclasses import dataclass

from afinar.data.formats import Example
from afinar.errors import InvalidRequest
from afinar.models.templates import end_of_turn_ids, prepare_messages


class TemplateError(InvalidRequest):
    code = "template_error"


@dataclass
class Encoded:
    input_ids: list[int]
    trained: list[bool]

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        return sum(self.trained)

    def labels(self, ignore_index: int = -100) -> list[int]:
        return [t if m else ignore_index for t, m in zip(self.input_ids, self.trained, strict=True)]

    def last_trained_index(self) -> int:
        return max((i for i, m in enumerate(self.trained) if m), default=-1)


def _apply(tok, messages, tools, add_generation_prompt: bool) -> str:
    return tok.apply_chat_template(messages, tools=tools, tokenize=False,
                                   add_generation_prompt=add_generation_prompt)


def _eot_markers(tok) -> list[str]:
    return [t for t in tok.convert_ids_to_tokens(end_of_turn_ids(tok)) if t]


def chat_spans(tok, messages: list[dict], tools: list[dict] | None,
               train: list[bool]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the trained assistant turns.

    ``train[i]`` says whether ``messages[i]`` (an assistant turn) is trained.
    """
    prepared, tools = prepare_messages(tok, messages, tools)
    shift = len(prepared) - len(messages)  # a tools preamble may be inserted as a system message
    try:
        full = _apply(tok, prepared, tools, add_generation_prompt=False)
    except Exception as e:  # jinja raises TemplateError and plain exceptions from raise_exception
        raise TemplateError(f"the chat template cannot render this example: {e}") from e
    markers = _eot_markers(tok)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m.get("role") != "assistant" or not train[i]:
            continue
        k = i + shift
        start = end = -1
        try:
            before = _apply(tok, prepared[:k], tools, add_generation_prompt=True)
            upto = _apply(tok, prepared[: k + 1], tools, add_generation_prompt=False)
            if full.startswith(before) and full.startswith(upto) and len(before) < len(upto):
                start, end = len(before), len(upto)
        except Exception:
            pass
        if start < 0:  # a template that is not prefix-stable: find the turn's text in order
            body = prepared[k]["content"]
            at = full.find(body, cursor) if body else -1
            if at < 0:
                raise TemplateError("cannot locate assistant turn "
                                    f"messages[{i}] in the rendered conversation")
            start, end = at, len(full)
        seg = full[start:end]
        hits = [seg.find(mk) + len(mk) for mk in markers if mk in seg]
        if not hits:
            raise TemplateError(
                f"the chat template does not end assistant turns with an end-of-turn token "
                f"({', '.join(markers) or 'none known'}): the model could not learn to stop")
        end = start + min(hits)
        spans.append((start, end))
        cursor = end
    return full, spans


def _mask_from_spans(tok, text: str, spans: list[tuple[int, int]]) -> Encoded:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    trained = [any(s <= a < e for s, e in spans) and b > a for a, b in offsets]
    return Encoded(list(ids), trained)


def encode_chat(tok, messages: list[dict], tools: list[dict] | None = None,
                only_last: bool = False) -> Encoded:
    train = [m.get("role") == "assistant" and m.get("weight", 1) == 1 for m in messages]
    if only_last:
        last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
        train = [i == last for i in range(len(messages))]
    text, spans = chat_spans(tok, messages, tools, train)
    return _mask_from_spans(tok, text, spans)


def _eos(tok) -> int:
    ids = end_of_turn_ids(tok)
    return tok.eos_token_id if tok.eos_token_id is not None else ids[0]


def encode_example(tok, ex: Example) -> Encoded | tuple[Encoded, Encoded]:
    """Token ids and trained mask; a preference example gives (chosen, rejected)."""
    if ex.format == "chat":
        return encode_chat(tok, ex.messages, ex.tools)
    if ex.format == "prompt":  # the conversation up to the answer the model will write
        prepared, tools = prepare_messages(tok, ex.messages, ex.tools)
        try:
            text = _apply(tok, prepared, tools, add_generation_prompt=True)
        except Exception as e:  # as in chat_spans: jinja raises plain exceptions too
            raise TemplateError(f"the chat template cannot render this example: {e}") from e
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        return Encoded(ids, [False] * len(ids))
    if ex.format == "unpaired":  # the answer only is trained, as a preference's
        return encode_chat(tok, [*ex.messages, {"role": "assistant", "content": ex.completion}],
                           ex.tools, only_last=True)
    if ex.format == "preference":
        return (encode_chat(tok, [*ex.messages, ex.chosen], ex.tools, only_last=True),
                encode_chat(tok, [*ex.messages, ex.rejected], ex.tools, only_last=True))
    if ex.format == "completion":
        p = tok(ex.prompt, add_special_tokens=False)["input_ids"]
        c = tok(ex.completion, add_special_tokens=False)["input_ids"] + [_eos(tok)]
        return Encoded(list(p) + list(c), [False] * len(p) + [True] * len(c))
    ids = list(tok(ex.text, add_special_tokens=False)["input_ids"]) + [_eos(tok)]
    return Encoded(ids, [True] * len(ids))
