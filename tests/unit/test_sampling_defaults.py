"""Sampling a request omits comes from the model's own recommendation (the catalog's entry, or
its ``generation_config.json``), as vLLM's ``--generation-config auto``; and a named
``tool_choice`` forces that call under constrained decoding, in chat completions and responses.
Both driven through the ``openai`` SDK against a live server on the tiny model."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import openai
import pytest

from afinar.models import BUILTINS, Catalog, SamplingParams
from afinar.models.generation import Generator
from afinar.server.app import create_app
from tests.live_server import client, complete, live_server

RECOMMENDED = {"temperature": 0.3, "top_p": 0.8, "top_k": 5}
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}},
        "required": ["city"]}
UNITS = {"type": "object", "properties": {"unit": {"type": "string", "enum": ["c", "f"]}},
         "required": ["unit"]}
TOOLS = [{"type": "function", "function": {"name": "get_time", "parameters": UNITS}},
         {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                           "parameters": CITY}}]
MSGS = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def live(home, tiny_model_template, tmp_path, monkeypatch):
    """The tiny model (2,048-token window) with a generation_config.json naming sampling, and a
    record of the SamplingParams every generation got."""
    model = shutil.copytree(tiny_model_template, tmp_path / "tiny")
    cfg = json.loads((model / "config.json").read_text())
    cfg["max_position_embeddings"] = 2048
    (model / "config.json").write_text(json.dumps(cfg))
    gen = json.loads((model / "generation_config.json").read_text()) if (
        model / "generation_config.json").exists() else {}
    (model / "generation_config.json").write_text(json.dumps({**gen, **RECOMMENDED}))
    Catalog().add("tiny", model)
    seen: list[SamplingParams] = []
    original = Generator.stream_ids

    def recording(self, prompt_ids, params=None):
        seen.append(params)
        return original(self, prompt_ids, params)

    monkeypatch.setattr(Generator, "stream_ids", recording)
    app = create_app(auth=False)
    with live_server(app) as url:
        yield SimpleNamespace(sdk=client(url, "unused"), seen=seen)


def test_the_embedded_chat_model_recommends_its_card_settings():
    smol = next(b for b in BUILTINS if b.id == "smollm2-135m-instruct")
    assert smol.sampling == {"temperature": 0.2, "top_p": 0.9}  # HF model card


def test_generation_config_names_the_defaults(home, tiny_model_template, tmp_path):
    Catalog().add("plain", tiny_model_template)
    folder = shutil.copytree(tiny_model_template, tmp_path / "m")
    (folder / "generation_config.json").write_text(json.dumps(
        {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "do_sample": True, "eos_token_id": 2}))
    Catalog().add("tuned", folder)
    assert Catalog().sampling_defaults("tuned") == {"temperature": 0.6, "top_p": 0.95,
                                                    "top_k": 20}
    plain = json.loads((tiny_model_template / "generation_config.json").read_text()) if (
        tiny_model_template / "generation_config.json").exists() else {}
    assert Catalog().sampling_defaults("plain") == {
        k: v for k, v in plain.items() if k in ("temperature", "top_p", "top_k", "min_p",
                                                "repetition_penalty")}


def test_given_values_win_and_odd_defaults_are_skipped():
    p = SamplingParams.with_defaults({"temperature": 0.0, "top_p": None},
                                     {"temperature": 0.7, "top_p": 0.9, "top_k": -3})
    assert (p.temperature, p.top_p, p.top_k) == (0.0, 0.9, 0)
    assert SamplingParams.with_defaults({}, {}).temperature == 1.0  # OpenAI's, when none named


def test_omitted_sampling_uses_the_models_recommendation(live):
    complete(live.sdk.chat.completions.create(model="tiny", messages=MSGS, max_tokens=2))
    p = live.seen[-1]
    assert (p.temperature, p.top_p, p.top_k) == (0.3, 0.8, 5)
    live.sdk.chat.completions.create(model="tiny", messages=MSGS, max_tokens=2, temperature=1.0)
    p = live.seen[-1]
    assert (p.temperature, p.top_p, p.top_k) == (1.0, 0.8, 5)  # only what is given changes
    live.sdk.completions.create(model="tiny", prompt="Once upon", max_tokens=2)
    assert (live.seen[-1].temperature, live.seen[-1].top_p) == (0.3, 0.8)
    resp = complete(live.sdk.responses.create(model="tiny", input="hi", max_output_tokens=2))
    assert (resp.temperature, resp.top_p) == (0.3, 0.8)
    assert (live.seen[-1].temperature, live.seen[-1].top_k) == (0.3, 5)
    resp = live.sdk.responses.create(model="tiny", input="hi", max_output_tokens=2, top_p=0.5)
    assert (resp.temperature, resp.top_p) == (0.3, 0.5)


def _args(arguments: str) -> dict:
    args = json.loads(arguments)
    assert isinstance(args, dict)
    return args


def test_a_named_tool_choice_forces_that_call_in_chat(live):
    for seed in range(3):
        r = complete(live.sdk.chat.completions.create(
            model="tiny", messages=MSGS, tools=TOOLS, max_tokens=80, seed=seed,
            tool_choice={"type": "function", "function": {"name": "get_weather"}}))
        msg = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls", msg
        [call] = msg.tool_calls
        assert call.function.name == "get_weather" and call.id.startswith("call_")
        assert set(_args(call.function.arguments)) == {"city"}
    assert live.seen[-1].json_schema["properties"]["name"] == {"const": "get_weather"}
    r = live.sdk.chat.completions.create(model="tiny", messages=MSGS, tools=TOOLS,
                                         max_tokens=80, tool_choice="required", seed=1)
    [call] = r.choices[0].message.tool_calls  # one of the tools, whichever the model picks
    assert call.function.name in ("get_time", "get_weather")
    assert set(_args(call.function.arguments)) == (
        {"city"} if call.function.name == "get_weather" else {"unit"})
    with pytest.raises(openai.BadRequestError):
        live.sdk.chat.completions.create(model="tiny", messages=MSGS, tools=TOOLS,
                                         tool_choice={"type": "function",
                                                      "function": {"name": "nope"}})


def test_a_named_tool_choice_forces_that_call_in_responses(live):
    tools = [{"type": "function", **t["function"]} for t in TOOLS]
    r = complete(live.sdk.responses.create(
        model="tiny", input="What is the weather in Paris?", tools=tools, max_output_tokens=80,
        tool_choice={"type": "function", "name": "get_weather"}))
    calls = [o for o in r.output if o.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"], r.output
    assert set(_args(calls[0].arguments)) == {"city"}
    # the tool loop: the call and its output go back as input items
    follow = complete(live.sdk.responses.create(
        model="tiny", tools=tools, max_output_tokens=4, input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
             "arguments": calls[0].arguments},
            {"type": "function_call_output", "call_id": calls[0].call_id,
             "output": "sunny, 21 C"}]))
    assert follow.status in ("completed", "incomplete") and follow.output


def test_a_forced_call_holds_only_the_declared_arguments():
    from afinar.models.toolcalls import forced_call_schema

    named = forced_call_schema(TOOLS, "get_weather")
    assert named["properties"]["arguments"]["additionalProperties"] is False
    assert named["properties"]["name"] == {"const": "get_weather"}
    open_ = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}},
        "additionalProperties": True}}}]
    assert forced_call_schema(open_)["properties"]["arguments"]["additionalProperties"] is True
    assert TOOLS[1]["function"]["parameters"] is CITY and "additionalProperties" not in CITY
