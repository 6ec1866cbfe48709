"""Tools (active RAG): YAML HTTP tools with env headers, Python tools, schema validation, the
constrained call, the call limit and the log, against a local HTTP endpoint."""

import json


from afinar.models import Generator
from afinar.rag.tools import ToolRegistry, answer_with_tools, constrained_call, model_generate, \
    python_tool

from tests.conftest import SEEN


def scripted(*replies):
    """A stand-in for the model's choices, to test the loop itself."""
    it = iter(replies)
    return lambda messages, tools, prefix, stop=None, max_tokens=None: next(it)


def test_yaml_http_tool_is_called_with_env_headers(weather_yaml):
    reg = ToolRegistry.from_yaml(weather_yaml)
    a = answer_with_tools(scripted('<tool_call>{"name": "get_weather", "arguments": '
                                   '{"city": "Paris"}}</tool_call>', "It is 17.3 C."),
                          [{"role": "user", "content": "weather?"}], reg)
    assert a.text == "It is 17.3 C."
    (call,) = a.calls
    assert call.ok and json.loads(call.result)["sky"] == "violet"
    assert SEEN == [{"path": "/weather/Paris", "auth": "Bearer s3cret"}]
    tool_msg = a.messages[-1]
    assert tool_msg["role"] == "tool" and "violet" in tool_msg["content"]


def test_bad_arguments_are_refused_before_anything_runs(weather_yaml):
    reg = ToolRegistry.from_yaml(weather_yaml)
    a = answer_with_tools(scripted('<tool_call>{"name": "get_weather", "arguments": '
                                   '{"town": 3}}</tool_call>', "sorry"),
                          [{"role": "user", "content": "weather?"}], reg)
    assert not a.calls[0].ok and "ValidationError" in a.calls[0].result and SEEN == []


def test_call_limit_and_python_tools():
    calls = []

    @python_tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        calls.append((a, b))
        return a + b

    reg = ToolRegistry([add])
    assert reg.specs()[0]["function"]["parameters"]["required"] == ["a", "b"]
    loop = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    a = answer_with_tools(scripted(loop, loop, "final"), [{"role": "user", "content": "1+2"}],
                          reg, max_calls=2)
    assert len(a.calls) == 2 and a.text == "final" and calls == [(1, 2), (1, 2)]


def test_constrained_call_on_the_tiny_model(tiny_long, weather_yaml):
    reg = ToolRegistry.from_yaml(weather_yaml)
    call = constrained_call(model_generate(Generator(tiny_long)),
                            [{"role": "user", "content": "weather in Paris?"}], reg)
    assert call["function"]["name"] == "get_weather"
    assert set(json.loads(call["function"]["arguments"])) == {"city"}  # valid, schema-shaped
