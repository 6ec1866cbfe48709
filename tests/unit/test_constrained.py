"""Constrained JSON decoding (``afinar.models.constrained``) on the tiny random model: a random
model never writes valid JSON by itself, so every parse below is the constraint's doing."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from afinar.errors import InvalidRequest
from afinar.models import Generator, SamplingParams, end_of_turn_ids
from afinar.models.constrained import (
    ANY_OBJECT,
    JsonConstraint,
    JsonIncomplete,
    json_chat,
)
from tests.helpers import bias_to

MSGS = [{"role": "user", "content": "hello world"}]
# Required properties, enums, an integer range, a boolean, an array and a nested object; strings
# are bounded so that a random model finishes within the budget.
SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"enum": ["pass", "fail"]},
        "score": {"type": "integer", "minimum": 0, "maximum": 10},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["red", "blue"]}, "maxItems": 3},
        "who": {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 6},
            "langs": {"type": "array", "items": {"type": "integer", "minimum": -9, "maximum": 99},
                      "maxItems": 2}},
            "required": ["name", "langs"], "additionalProperties": False},
    },
    "required": ["verdict", "score", "ok", "tags", "who"],
    "additionalProperties": False,
}


def _eos(lm) -> list[int]:
    return end_of_turn_ids(lm.tokenizer, lm.model.generation_config)


def test_sampled_replies_parse_and_match_the_schema(tiny_long):
    gen = Generator(tiny_long)
    for seed in (0, 1, 2):
        value, r = json_chat(gen, MSGS, SCHEMA, SamplingParams(seed=seed, max_tokens=150))
        assert r.finish_reason == "stop" and json.loads(r.text) == value
        jsonschema.validate(value, SCHEMA)
    value, r = json_chat(gen, MSGS, SCHEMA, SamplingParams(temperature=0, max_tokens=150))
    jsonschema.validate(value, SCHEMA)
    # The same seed without the constraint is not JSON: the test above is not luck.
    free = gen.chat(MSGS, SamplingParams(seed=0, max_tokens=40))
    with pytest.raises(ValueError):
        json.loads(free.text)


def test_any_object_and_streamed_deltas(tiny):
    gen = Generator(tiny)
    for seed in (0, 2, 3):
        s = gen.stream(MSGS, SamplingParams(seed=seed, json_schema=ANY_OBJECT, max_tokens=150))
        text = "".join(s)
        assert text == s.result.text and s.result.finish_reason == "stop"
        assert isinstance(json.loads(text), dict)


def test_end_of_turn_only_when_the_json_is_complete(tiny):
    """A model that wants to stop at once (EOS biased to near certainty), sampled with a tight
    top_p and penalties, still writes whole JSON: the mask comes before top_p, so the only
    allowed tokens survive, and EOS is refused until the object is closed."""
    eos = tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")
    bias_to(tiny, eos, bias=12.0)
    gen = Generator(tiny)
    assert gen.chat(MSGS, SamplingParams(seed=0, max_tokens=5)).text == ""  # stops at once
    schema = {"type": "object", "properties": {"a": {"enum": ["red", "blue"]},
                                               "b": {"type": "boolean"}},
              "required": ["a", "b"], "additionalProperties": False}
    p = SamplingParams(seed=0, max_tokens=40, top_p=0.05, frequency_penalty=1.0)
    value, r = json_chat(gen, MSGS, schema, p, hint=False)
    assert r.finish_reason == "stop" and set(value) == {"a", "b"}
    jsonschema.validate(value, schema)
    assert r.completion_tokens == len(tiny.tokenizer(r.text)["input_ids"]) + 1  # + the EOS


def test_the_processor_masks_eos_until_accepting(tiny):
    tok = tiny.tokenizer
    proc = JsonConstraint(tok, ANY_OBJECT, _eos(tiny)).processor(prompt_len=0)
    vocab = tiny.model.config.vocab_size
    eos = _eos(tiny)

    def allowed(text: str) -> torch.Tensor:
        ids = tok(text, add_special_tokens=False)["input_ids"] if text else []
        return proc(torch.tensor([ids], dtype=torch.long), torch.zeros(1, vocab))[0] == 0

    first = allowed("")
    assert first[tok.convert_tokens_to_ids("{")] and not first[eos].any()
    assert not first[tok.convert_tokens_to_ids("a")]  # text before the object: refused
    assert not allowed('{"a": 1')[eos].any()
    done = allowed('{"a": 1}')
    assert done[eos].all() and int(done.sum()) == len(eos)  # complete: only the end of turn


def test_max_tokens_cut_is_length_and_json_chat_raises(tiny_long):
    gen = Generator(tiny_long)
    r = gen.chat(MSGS, SamplingParams(seed=0, max_tokens=6, json_schema=SCHEMA))
    assert r.finish_reason == "length" and r.completion_tokens == 6
    assert '{"verdict": '.startswith(r.text)  # the schema's first property, cut
    with pytest.raises(JsonIncomplete, match="max_tokens") as e:
        json_chat(gen, MSGS, SCHEMA, SamplingParams(seed=0, max_tokens=6))
    assert e.value.code == "json_incomplete" and e.value.param == "max_tokens"


@pytest.mark.parametrize("schema, why", [
    ({"type": "nonsense"}, "nonsense"),
    ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
])
def test_schemas_that_cannot_be_enforced_are_rejected_before_generating(tiny, schema, why):
    with pytest.raises(InvalidRequest, match=why) as e:
        Generator(tiny).stream(MSGS, SamplingParams(json_schema=schema))
    assert e.value.param == "response_format"
    lenient = {"type": "object", "properties": {"a": {"not": {"type": "string"}}},
               "x-guidance": {"lenient": True}}  # unknown keywords ignored on request
    Generator(tiny).stream(MSGS, SamplingParams(json_schema=lenient))
    with pytest.raises(InvalidRequest, match="JSON object"):
        JsonConstraint(tiny.tokenizer, "not a schema", _eos(tiny))


def test_compiled_grammar_is_cached_per_tokenizer_and_schema(tiny):
    from afinar.models.constrained import _compiled

    a = _compiled(tiny.tokenizer, SCHEMA)
    assert _compiled(tiny.tokenizer, json.loads(json.dumps(SCHEMA))) is a
    assert _compiled(tiny.tokenizer, dict(reversed(SCHEMA.items()))) is a  # key order
    assert _compiled(tiny.tokenizer, ANY_OBJECT) is not a
