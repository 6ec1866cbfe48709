"""Continuous batching on the llama.cpp engine (``engines/llamacpp_batch.py``): concurrent
requests as sequences of one ``llama_batch`` give what each gives alone on the solo path
(``max_batch`` 1: one ``generate`` at a time), greedy and seeded (llama.cpp's sampler chain and,
with a penalty or JSON, transformers' processors), join and leave mid-flight, keep their own stop
strings and budgets; a cancelled stream ends alone; runtime adapters on a shared context are
batched one adapter at a time. Skips (saying why) without llama-cpp-python."""

from __future__ import annotations

import json
import threading

import pytest

from afinar.models import Catalog, Generator, ModelCache, SamplingParams
from afinar.models.engines.llamacpp import unavailable_reason
from tests.helpers import all_at_once
from tests.unit.test_batching import PROMPTS, msgs

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


@pytest.fixture
def pair(home, tiny_model_template):
    """(batched, solo): the tiny model on llama.cpp (f32) with max_batch 8 and 1."""
    from afinar.settings import get_settings

    Catalog().add("tiny", tiny_model_template)
    s = get_settings().model_copy(update={"engine": "llama.cpp", "llama_weights": "f32"})
    batched = ModelCache().get("tiny", settings=s)
    solo = ModelCache().get("tiny", settings=s.model_copy(update={"max_batch": 1}))
    assert batched.batcher is not None and solo.batcher is None
    return batched, solo


def together(lm, cases):
    out: dict[int, object] = {}

    def one(i):
        s = Generator(lm).stream(*cases[i])
        text = "".join(s)
        assert text == s.result.text
        out[i] = s.result

    all_at_once(one, list(range(len(cases))))
    return [out[i] for i in range(len(cases))]


def test_greedy_and_seeded_batched_equal_solo(pair):
    batched, solo = pair
    cases = [(msgs(t), SamplingParams(temperature=0, max_tokens=12)) for t in PROMPTS[:3]] + [
        (msgs(t), SamplingParams(temperature=1.3, top_p=0.9, max_tokens=14, seed=20 + i, **kw))
        for i, (t, kw) in enumerate(zip(PROMPTS[2:], [{}, {"top_k": 30}, {"min_p": 0.05},
                                                      {"frequency_penalty": 1.0}]))]
    want = [Generator(solo).chat(*c) for c in cases]
    assert len({r.text for r in want}) > 3
    got = together(batched, cases)
    assert [(r.text, r.completion_tokens) for r in got] == \
        [(r.text, r.completion_tokens) for r in want]
    assert batched.batcher.widest > 1


def test_join_leave_stops_and_budgets(pair):
    batched, solo = pair
    long_p = SamplingParams(temperature=1.1, max_tokens=50, seed=4)
    want_long = Generator(solo).chat(msgs("hello"), long_p).text
    shorts = [(msgs(t), SamplingParams(temperature=0, max_tokens=k, stop=stop))
              for t, k, stop in [("question 3", 3, []), ("Red, blue and", 8, ["e"]),
                                 ("tool 7 8 9", 5, [])]]
    want = [Generator(solo).chat(*c) for c in shorts]
    out: dict[str, object] = {}
    started = threading.Event()

    def long_run():
        s = Generator(batched).stream(msgs("hello"), long_p)
        for k, _ in enumerate(s):
            if k == 1:
                started.set()
        out["long"] = s.result.text

    t = threading.Thread(target=long_run)
    t.start()
    assert started.wait(60)
    got = [Generator(batched).chat(*c) for c in shorts]  # each joins the running batch
    t.join(120)
    assert out["long"] == want_long
    assert [(r.text, r.finish_reason, r.completion_tokens) for r in got] == \
        [(r.text, r.finish_reason, r.completion_tokens) for r in want]


def test_json_mode_beside_a_plain_request_and_a_cancelled_one(pair):
    batched, solo = pair
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    pj = SamplingParams(temperature=0.8, max_tokens=30, seed=5, json_schema=schema)
    pp = SamplingParams(temperature=0.8, max_tokens=20, seed=6)
    want = [Generator(solo).chat(msgs("hello"), pj).text, Generator(solo).chat(msgs("hi"), pp).text]
    got: dict[str, str] = {}

    def quitter(_):
        it = iter(Generator(batched).stream(msgs("hello"), SamplingParams(max_tokens=100, seed=1)))
        next(it, None)
        it.close()

    def run(which):
        if which == "q":
            return quitter(which)
        m, p = (msgs("hello"), pj) if which == "j" else (msgs("hi"), pp)
        got[which] = Generator(batched).chat(m, p).text

    all_at_once(run, ["j", "p", "q"])
    assert [got["j"], got["p"]] == want
    if not got["j"].startswith('{"n": ') or got["j"].endswith("}"):
        assert isinstance(json.loads(got["j"])["n"], int)
    assert not batched.lock.locked()
    assert Generator(batched).chat(msgs("hi"), SamplingParams(max_tokens=2)).completion_tokens <= 2


def test_runtime_adapters_share_the_context_one_adapter_per_batch(home, tiny_model_template,
                                                                   tmp_path):
    from afinar.settings import get_settings
    from tests.unit.test_adapters import ANSWERS, GREEDY, PROMPT, train_adapter

    Catalog().add("tiny", tiny_model_template)
    ids = [train_adapter(f"ft:tiny:afinar:{n}:{i:08d}", a, tmp_path / n, seed=i)
           for i, (n, a) in enumerate(ANSWERS.items())]
    ref = ModelCache(max_models=1)
    want = {m: Generator(ref.get(m)).chat(PROMPT, GREEDY).text for m in [*ids, "tiny"]}
    s = get_settings().model_copy(update={"engine": "llama.cpp", "llama_weights": "f32",
                                          "llama_adapters": "runtime"})
    cache = ModelCache(max_models=1, max_adapters=2)
    order = [*ids, "tiny"] * 3
    got: list[tuple[str, str]] = []
    all_at_once(lambda m: got.append((m, Generator(cache.get(m, settings=s)).chat(
        PROMPT, GREEDY).text)), order)
    assert len(got) == len(order) and [(m, t) for m, t in got if t != want[m]] == []
    assert cache.get("tiny", settings=s).batcher.widest >= 2
