"""Constrained JSON on the embedded SmolLM2: three prompts, each answered with JSON that parses
and matches the schema (required keys, an enum, a bounded integer, an array, a nested object)."""

from __future__ import annotations

import jsonschema
import pytest

from afinar.models import Catalog, Generator, SamplingParams, load_causal_lm
from afinar.models.constrained import json_chat
from tests.helpers import home_at, link_conversion

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "maxLength": 80},
        "confidence": {"enum": ["low", "medium", "high"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "keywords": {"type": "array", "items": {"type": "string", "maxLength": 20},
                     "maxItems": 3},
        "source": {"type": "object", "properties": {"kind": {"enum": ["memory", "reasoning"]}},
                   "required": ["kind"], "additionalProperties": False},
    },
    "required": ["answer", "confidence", "score", "keywords", "source"],
    "additionalProperties": False,
}
PROMPTS = ["Name a primary colour.", "What is the capital of France?",
           "Is Debian an operating system? Answer yes or no."]


@pytest.fixture(scope="module")
def smol(tmp_path_factory, embedded_conversion):
    with home_at(tmp_path_factory.mktemp("constrained") / "home") as h:
        link_conversion(h, embedded_conversion)
        yield load_causal_lm(Catalog().get("smollm2-135m-instruct"))


@pytest.mark.parametrize("prompt", PROMPTS)
def test_smollm2_json_schema_replies_parse_and_validate(smol, prompt):
    value, r = json_chat(Generator(smol), [{"role": "user", "content": prompt}], SCHEMA,
                         SamplingParams(temperature=0, max_tokens=200))
    assert r.finish_reason == "stop"
    jsonschema.validate(value, SCHEMA)
