import pytest
import torch

from afinar.errors import ContextLengthExceeded, InvalidRequest
from afinar.models import Generator, SamplingParams, end_of_turn_ids, render_ids, render_text
from tests.helpers import bias_to

MSGS = [{"role": "user", "content": "hello world"}]


def _word_token(tok, n=3):
    """A non-special token that decodes to n distinct letters."""
    for t, i in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]):
        s = tok.decode([i])
        if len(s) == n and s.isalpha() and len(set(s)) == n and i not in tok.all_special_ids:
            return i, s
    raise AssertionError("no suitable token")


def test_prompt_uses_the_models_own_template(tiny):
    text = render_text(tiny.tokenizer, MSGS)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n")
    ids = render_ids(tiny.tokenizer, MSGS)
    assert tiny.tokenizer.decode(ids) == text
    r = Generator(tiny).chat(MSGS, SamplingParams(max_tokens=3, seed=1))
    assert r.prompt_tokens == len(ids)
    assert end_of_turn_ids(tiny.tokenizer) == [tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_same_seed_same_output_and_other_seeds_differ(tiny):
    gen = Generator(tiny)
    p = dict(temperature=1.5, max_tokens=24)
    a = gen.chat(MSGS, SamplingParams(seed=7, **p))
    b = gen.chat(MSGS, SamplingParams(seed=7, **p))
    c = gen.chat(MSGS, SamplingParams(seed=8, **p))
    assert a.text == b.text and a.completion_tokens == b.completion_tokens
    assert c.text != a.text
    assert a.seed == 7
    unseeded = gen.chat(MSGS, SamplingParams(**p))
    assert unseeded.seed is not None  # reported so the run can be repeated
    again = gen.chat(MSGS, SamplingParams(seed=unseeded.seed, **p))
    assert again.text == unseeded.text


def test_streaming_yields_the_same_text_piece_by_piece(tiny):
    gen = Generator(tiny)
    params = SamplingParams(temperature=1.0, max_tokens=20, seed=3)
    s = gen.stream(MSGS, params)
    deltas = list(s)
    assert len(deltas) > 1
    assert "".join(deltas) == s.result.text == gen.chat(MSGS, params).text


def test_max_tokens_finishes_with_length(tiny):
    i, word = _word_token(tiny.tokenizer)
    bias_to(tiny, i)
    r = Generator(tiny).chat(MSGS, SamplingParams(temperature=0, max_tokens=5))
    assert r.finish_reason == "length"
    assert r.completion_tokens == 5
    assert r.text == word * 5


def test_greedy_stops_at_end_of_turn_token_and_hides_it(tiny):
    eot = tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")
    bias_to(tiny, eot)
    r = Generator(tiny).chat(MSGS, SamplingParams(temperature=0, max_tokens=50))
    assert (r.finish_reason, r.text, r.completion_tokens) == ("stop", "", 1)


def test_greedy_stops_at_end_of_turn_after_learned_answer(tiny):
    """Teach the tiny model one reply, then check greedy decoding ends exactly at <|im_end|>."""
    tok, model = tiny.tokenizer, tiny.model
    prompt = render_ids(tok, MSGS)
    target = tok("Red, blue and yellow.", add_special_tokens=False)["input_ids"]
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    ids = torch.tensor([prompt + target + [eot]])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    torch.manual_seed(0)
    for _ in range(150):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    assert loss.item() < 0.05, loss.item()
    r = Generator(tiny).chat(MSGS, SamplingParams(temperature=0, max_tokens=100))
    assert r.text == "Red, blue and yellow."
    assert r.finish_reason == "stop"
    assert r.completion_tokens == len(target) + 1  # the answer plus its end-of-turn token


def test_stop_string_across_tokens_is_cut_and_never_streamed(tiny):
    i, word = _word_token(tiny.tokenizer)  # e.g. "abc" -> "abcabcabc..."
    bias_to(tiny, i)
    stop = word[-1] + word[0]  # spans the boundary between two tokens
    s = Generator(tiny).stream(MSGS, SamplingParams(temperature=0, max_tokens=20, stop=[stop]))
    deltas = list(s)
    assert "".join(deltas) == s.result.text == word[:-1]
    assert s.result.finish_reason == "stop"
    assert s.result.completion_tokens == 2


def test_held_back_prefix_of_a_stop_that_never_completes_is_released(tiny):
    i, word = _word_token(tiny.tokenizer)
    bias_to(tiny, i)
    s = Generator(tiny).stream(MSGS, SamplingParams(temperature=0, max_tokens=4,
                                                    stop=[word[-1] + "\u00e9"]))
    assert "".join(s) == s.result.text == word * 4
    assert s.result.finish_reason == "length"


def test_prompt_over_the_context_is_a_clear_error(tiny):
    gen = Generator(tiny)
    long = [{"role": "user", "content": "hello world " * 300}]
    with pytest.raises(ContextLengthExceeded, match="maximum context length is 256"):
        gen.chat(long)
    n = len(gen.prompt_ids(MSGS))
    with pytest.raises(ContextLengthExceeded, match="max_tokens"):
        gen.chat(MSGS, SamplingParams(max_tokens=256 - n + 1))
    r = gen.chat(MSGS, SamplingParams(max_tokens=256 - n, temperature=0))
    assert r.prompt_tokens + r.completion_tokens <= 256


def test_abandoned_stream_releases_the_model(tiny):
    gen = Generator(tiny)
    s = gen.stream(MSGS, SamplingParams(max_tokens=200, seed=1))
    it = iter(s)
    next(it)
    it.close()  # the consumer went away (Ctrl-C, client disconnect)
    assert not tiny.lock.locked()
    assert gen.chat(MSGS, SamplingParams(max_tokens=2, seed=1)).completion_tokens <= 2


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(max_tokens=0),
                                 dict(stop=["a", "b", "c", "d", "e"]), dict(stop=[""])])
def test_bad_sampling_params(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_model_without_chat_template(tiny):
    tiny.tokenizer.chat_template = None
    with pytest.raises(InvalidRequest, match="no chat template"):
        Generator(tiny).chat(MSGS)
    r = Generator(tiny).stream_text("hello", SamplingParams(max_tokens=3, seed=0))
    list(r)
    assert r.result.completion_tokens <= 3


@pytest.mark.parametrize("kind", ["frequency_penalty", "presence_penalty"])
def test_openai_penalties_lower_repeated_tokens(tiny, kind):
    i, word = _word_token(tiny.tokenizer)
    bias = 10.0 if kind == "frequency_penalty" else 1.5
    bias_to(tiny, i, bias)  # greedy alone repeats one token forever (the other logits: 0)
    gen = Generator(tiny)
    plain = gen.chat(MSGS, SamplingParams(temperature=0, max_tokens=20))
    assert plain.text == word * 20
    pen = gen.chat(MSGS, SamplingParams(temperature=0, max_tokens=20, **{kind: 2.0}))
    n = pen.text.count(word)
    if kind == "frequency_penalty":
        assert 5 <= n <= 6  # 10 - 2 * count falls to the others' 0 after five repeats
    else:
        assert n == 1  # after its first use 1.5 - 2 < 0: any unused token beats it
