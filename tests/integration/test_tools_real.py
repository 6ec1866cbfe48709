"""The embedded model calls a live local endpoint and answers with what only it knows."""

import pytest

from afinar.models import Catalog, Generator, load_causal_lm
from afinar.rag.tools import ToolRegistry, answer_with_tools, model_generate
from tests.conftest import SEEN

pytestmark = pytest.mark.integration


def test_weather_answer_comes_from_the_tool(home, weather_yaml):
    gen = Generator(load_causal_lm(Catalog().get("smollm2-135m-instruct")))
    a = answer_with_tools(model_generate(gen), [{"role": "user", "content":
                                                 "What is the weather in Paris right now?"}],
                          ToolRegistry.from_yaml(weather_yaml), tool_choice="required")
    print(f"\ncalls: {[(c.name, c.arguments) for c in a.calls]}\nanswer: {a.text}")
    assert [c.name for c in a.calls] == ["get_weather"] and a.calls[0].ok
    assert a.calls[0].arguments == {"city": "Paris"} and SEEN[0]["path"] == "/weather/Paris"
    # 17.3 degrees and a violet sky exist only in the endpoint's reply
    assert "17.3" in a.text or "violet" in a.text.lower()
