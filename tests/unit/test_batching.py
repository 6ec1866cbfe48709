"""Continuous batching (``models/batching.py``) on the tiny model, transformers engine: requests
decoded together give what each gives alone on the solo ``generate`` path (greedy tokens, seeded
samples, penalties, JSON mode), join and leave between steps, keep their own stop strings and
budgets, and one consumer going away ends only its own request."""

from __future__ import annotations

import json
import threading
import time

import pytest

from afinar.models import Generator, SamplingParams
from afinar.models.batching import torch_scheduler
from tests.helpers import all_at_once

PROMPTS = ["hello", "question 3", "Debian is a free operating system", "Red, blue and",
           "tool 7 8 9", "The quick brown fox jumps over the lazy dog."]


def msgs(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def batched(tiny):
    """``tiny`` with a scheduler of 8; ``solo`` runs ``generate`` one at a time (max_batch 1)."""
    tiny.batcher = torch_scheduler(tiny.model, tiny.device, tiny.lock, 8)
    return tiny


def solo(lm, messages, params):
    keep, lm.batcher = lm.batcher, None
    try:
        s = Generator(lm).stream(messages, params)
        deltas = list(s)
        return s.result, deltas
    finally:
        lm.batcher = keep


def together(lm, cases):
    """Run every (messages, params) at once; results and deltas in the cases' order."""
    out: dict[int, tuple] = {}

    def one(i):
        s = Generator(lm).stream(*cases[i])
        deltas = list(s)
        out[i] = (s.result, deltas)

    all_at_once(one, list(range(len(cases))))
    return [out[i] for i in range(len(cases))]


def test_greedy_batched_equals_solo_generate(batched):
    p = SamplingParams(temperature=0, max_tokens=12)
    want = [solo(batched, msgs(t), p)[0] for t in PROMPTS]
    got = together(batched, [(msgs(t), p) for t in PROMPTS])
    assert [(r.text, r.completion_tokens, r.finish_reason) for r, _ in got] == \
        [(r.text, r.completion_tokens, r.finish_reason) for r in want]
    assert batched.batcher.widest > 1  # they did share forwards


def test_seeded_sampling_batched_gives_the_solo_text(batched):
    cases = [(msgs(t), SamplingParams(temperature=1.3, top_p=0.95, max_tokens=16, seed=10 + i,
                                      **extra))
             for i, (t, extra) in enumerate(zip(PROMPTS, [{}, {"top_k": 20}, {"min_p": 0.05},
                                                        {"repetition_penalty": 1.3},
                                                        {"frequency_penalty": 1.0}, {}]))]
    want = [solo(batched, m, p)[0].text for m, p in cases]
    assert len(set(want)) > 3  # the seeds and prompts matter: not one repeated token
    got = together(batched, cases)
    assert [r.text for r, _ in got] == want
    # and again, batched: the same seed is the same text
    assert [r.text for r, _ in together(batched, cases)] == want


def test_padding_does_not_change_the_logits(batched):
    """Rows of different lengths in one forward: each row's greedy choices equal its solo
    ones, and the scores agree to float tolerance (why greedy tokens match)."""
    import torch

    from afinar.models.batching import BatchRequest, TorchBackend
    from afinar.models.templates import render_ids

    be = TorchBackend(batched.model, "cpu")
    reqs = [BatchRequest(render_ids(batched.tokenizer, msgs(t)), 4, set(), processors=[],
                         warpers=[], do_sample=False, seed=0) for t in PROMPTS[:3]]
    with torch.inference_mode():
        first = [be.prefill(r) for r in reqs]
        for r, f in zip(reqs, first):
            r.ids.append(int(f.argmax()))
        rows = be.decode(reqs)
        assert be.mask.shape[0] == 3 and int(be.mask[0].sum()) == len(reqs[0].ids)
        for r, row in zip(reqs, rows):
            alone = batched.model(input_ids=torch.tensor([r.ids])).logits[:, -1]
            assert torch.allclose(row, alone, atol=1e-4), (row - alone).abs().max()
        # a row leaving: the others keep decoding right, padding trimmed
        for r, row in zip(reqs, rows):
            r.ids.append(int(row.argmax()))
        rows = be.decode(reqs[1:])
        assert be.mask.shape[0] == 2 and bool(be.mask.any(dim=0).all())
        for r, row in zip(reqs[1:], rows):
            alone = batched.model(input_ids=torch.tensor([r.ids])).logits[:, -1]
            assert torch.allclose(row, alone, atol=1e-4)


def test_requests_join_and_leave_mid_flight(batched):
    """A long request is decoding; short ones arrive during it, finish and leave; the long one
    still gives its solo text."""
    long_p = SamplingParams(temperature=1.2, max_tokens=60, seed=3)
    short_p = SamplingParams(temperature=0, max_tokens=3)
    want_long = solo(batched, msgs("hello"), long_p)[0]
    want_short = {t: solo(batched, msgs(t), short_p)[0].text for t in PROMPTS[1:4]}
    results: dict[str, object] = {}
    started = threading.Event()

    def long_run():
        s = Generator(batched).stream(msgs("hello"), long_p)
        for k, _ in enumerate(s):
            if k == 2:
                started.set()
        results["long"] = s.result

    t = threading.Thread(target=long_run)
    t.start()
    assert started.wait(60)
    steps_before = batched.batcher.steps
    for text in PROMPTS[1:4]:  # one after another: each joins the running batch
        results[text] = Generator(batched).chat(msgs(text), short_p)
    t.join(120)
    assert results["long"].text == want_long.text
    assert results["long"].completion_tokens == want_long.completion_tokens >= 12
    assert {k: results[k].text for k in want_short} == want_short
    assert batched.batcher.widest >= 2 and batched.batcher.steps > steps_before


def test_stop_strings_and_max_tokens_are_per_request(batched):
    from tests.helpers import bias_to
    from tests.unit.test_generation import _word_token

    i, word = _word_token(batched.tokenizer)
    bias_to(batched, i)  # every request repeats `word`
    stop = word[-1] + word[0]
    cases = [(msgs("a"), SamplingParams(temperature=0, max_tokens=20, stop=[stop])),
             (msgs("b"), SamplingParams(temperature=0, max_tokens=5)),
             (msgs("c"), SamplingParams(temperature=0, max_tokens=9)),
             (msgs("d"), SamplingParams(temperature=0, max_tokens=4, stop=[word[-1] + "\u00e9"]))]
    got = together(batched, cases)
    (a, da), (b, _), (c, _), (d, dd) = got
    assert (a.text, a.finish_reason, a.completion_tokens) == (word[:-1], "stop", 2)
    assert "".join(da) == a.text
    assert (b.text, b.finish_reason, b.completion_tokens) == (word * 5, "length", 5)
    assert (c.text, c.completion_tokens) == (word * 9, 9)
    assert "".join(dd) == d.text == word * 4


def test_json_mode_batched_with_a_plain_request(batched):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    pj = SamplingParams(temperature=0.8, max_tokens=40, seed=5, json_schema=schema)
    pp = SamplingParams(temperature=0.8, max_tokens=20, seed=6)
    want_j, want_p = solo(batched, msgs("hello"), pj)[0], solo(batched, msgs("hello"), pp)[0]
    (j, _), (p, _) = together(batched, [(msgs("hello"), pj), (msgs("hello"), pp)])
    assert (j.text, p.text) == (want_j.text, want_p.text)
    if j.finish_reason == "stop":
        assert isinstance(json.loads(j.text)["n"], int)
    else:  # cut by max_tokens: still a prefix of JSON for the schema
        assert j.text.startswith('{"n": ')


def test_a_cancelled_stream_leaves_the_others_running(batched):
    p = SamplingParams(temperature=1.0, max_tokens=40, seed=1)
    want = solo(batched, msgs("question 3"), p)[0].text
    out: dict[str, object] = {}
    gate = threading.Barrier(2)

    def quitter():
        it = iter(Generator(batched).stream(msgs("hello"), SamplingParams(max_tokens=200, seed=2)))
        gate.wait()
        next(it)
        it.close()  # the client went away
        out["closed"] = time.perf_counter()

    def stayer():
        gate.wait()
        out["text"] = Generator(batched).chat(msgs("question 3"), p).text

    all_at_once(lambda f: f(), [quitter, stayer])
    assert out["text"] == want and "closed" in out
    assert not batched.lock.locked()
    # the model still serves
    assert Generator(batched).chat(msgs("hello"), SamplingParams(max_tokens=2)).completion_tokens \
        <= 2


def test_a_failing_request_fails_alone(batched):
    """A prompt over the context fails before it is queued; a JSON schema that cannot be
    enforced too; the batch goes on."""
    from afinar.errors import ContextLengthExceeded

    with pytest.raises(ContextLengthExceeded):
        Generator(batched).chat(msgs("hello world " * 300))
    assert Generator(batched).chat(msgs("hi"), SamplingParams(max_tokens=3, temperature=0)) \
        .completion_tokens == 3


def test_max_batch_one_is_the_solo_path(tiny):
    assert torch_scheduler(tiny.model, "cpu", tiny.lock, 1) is None


def test_the_engine_attaches_a_scheduler_of_max_batch(home, tiny_model_template):
    from afinar.models import Catalog, ModelCache
    from afinar.settings import get_settings

    Catalog().add("tiny", tiny_model_template)
    lm = ModelCache().get("tiny", settings=get_settings().model_copy(update={"max_batch": 3}))
    assert lm.batcher is not None and lm.batcher.max_batch == 3
    one = ModelCache().get("tiny", settings=get_settings().model_copy(update={"max_batch": 1}))
    assert one.batcher is None


def test_server_batches_concurrent_openai_streams(home, tiny_model_template):
    """Several openai-SDK streams at once through ``afinar serve``'s app: each gets the text it
    gets alone, they shared forwards, and a client that drops its stream breaks no other."""
    import openai

    from afinar.models import Catalog
    from afinar.server.app import create_app
    from tests.live_server import live_server

    Catalog().add("tiny", tiny_model_template)
    app = create_app(auth=False)
    with live_server(app) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0)

        def stream(i: int, n: int = 16) -> str:
            chunks = sdk.chat.completions.create(
                model="tiny", messages=msgs(PROMPTS[i % len(PROMPTS)]), stream=True,
                max_tokens=n, temperature=1.2, seed=100 + i)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        want = {i: stream(i) for i in range(6)}  # one at a time
        got: dict[int, str] = {}

        def client(i: int) -> None:
            if i == 6:  # reads two chunks and hangs up
                chunks = sdk.chat.completions.create(model="tiny", messages=msgs("hello"),
                                                     stream=True, max_tokens=200, seed=1)
                next(iter(chunks))
                chunks.close()
                return
            got[i] = stream(i)

        all_at_once(client, list(range(7)))
        assert got == want
        lm = app.state.models.get("tiny", None, app.state.settings)
        assert lm.batcher is not None and lm.batcher.widest >= 2
