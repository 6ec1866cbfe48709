"""Every registered engine, table-driven (``engines.ENGINES``): it loads the tiny base and a LoRA
fine-tune through ``ModelCache`` and answers as the transformers reference does, hosting the
adapter on the shared base behind the one adapter LRU. An engine whose optional dependency is
absent is skipped with its own reason, and selecting it is one error saying what to install.
Also: the one ``LRU`` itself, and llama.cpp's merged-model host on it (without llama.cpp)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from afinar.errors import InvalidRequest
from afinar.models import Catalog, Generator, LoadedModel, ModelCache
from afinar.models.adapters import LRU
from afinar.models.catalog import ModelInfo
from afinar.models.engines import ENGINES, Engine, get_engine
from afinar.models.gguf import EngineUnavailable
from tests.unit.test_adapters import ANSWERS, GREEDY, PROMPT, train_adapter

PROMPTS = ["hello", "question 3", "Debian is"]


@pytest.fixture(params=ENGINES.names())
def engine_settings(request, home):
    from afinar.settings import get_settings

    reason = ENGINES.get(request.param).unavailable_reason()
    if reason:
        pytest.skip(f"engine {request.param}: {reason}")
    return get_settings().model_copy(update={"engine": request.param})


def test_every_engine_answers_as_the_reference(tiny_model_template, tmp_path, engine_settings):
    name = engine_settings.engine
    engine = get_engine(name)
    assert isinstance(engine, Engine) and engine.name == name
    Catalog().add("tiny", tiny_model_template)
    ft = train_adapter("ft:tiny:afinar:colours:00000000", ANSWERS["colours"], tmp_path / "ft")
    ref = ModelCache(max_models=1)
    want = {m: Generator(ref.get(m)).chat(PROMPT, GREEDY).text for m in ("tiny", ft)}
    assert want["tiny"] != want[ft]

    cache = ModelCache(max_models=1, max_adapters=1)
    base = cache.get("tiny", settings=engine_settings)
    assert isinstance(base, LoadedModel)
    for text in PROMPTS:
        msgs = [{"role": "user", "content": text}]
        assert Generator(base).chat(msgs, GREEDY).text == \
            Generator(ref.get("tiny")).chat(msgs, GREEDY).text, (name, text)
    assert engine.shares_base(Catalog().get(ft))
    lm = cache.get(ft, settings=engine_settings)
    assert lm.loaded_from == "adapter" and lm.adapter
    assert Generator(lm).chat(PROMPT, GREEDY).text == want[ft]
    host = cache.adapters("tiny")
    assert host.loaded == [lm.adapter] and host.loads == 1 and host.evictions == 0
    assert cache.get(ft, settings=engine_settings).adapter == lm.adapter
    assert host.loads == 1  # a use, not a reload
    assert Generator(cache.get("tiny", settings=engine_settings)).chat(PROMPT, GREEDY).text == \
        want["tiny"]  # the base again, without the adapter


def test_an_unknown_engine_is_one_error_naming_the_registered_ones():
    with pytest.raises(InvalidRequest) as e:
        get_engine("llama")
    assert e.value.param == "engine"
    assert "did you mean 'llama.cpp'" in e.value.message
    assert all(n in e.value.message for n in ENGINES.names())


def test_a_missing_llama_cpp_is_one_error_saying_what_to_install(home, monkeypatch, capsys):
    from afinar.cli import main

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp -> ImportError
    assert "llama.cpp" in ENGINES  # registered all the same: its module imports without it
    reason = ENGINES.get("llama.cpp").unavailable_reason()
    assert reason and "pip install 'afinar[llama]'" in reason
    with pytest.raises(EngineUnavailable, match=r"pip install 'afinar\[llama\]'"):
        get_engine("llama.cpp")
    with pytest.raises(SystemExit) as e:
        main(["serve", "--engine", "llama.cpp", "--no-worker"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pip install 'afinar[llama]'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_serve_help_names_every_registered_engine(capsys):
    from afinar.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(n in out for n in ENGINES.names())


# --- the one LRU --------------------------------------------------------------------------------

def test_lru_keeps_the_most_recent_and_hands_each_dropped_entry_to_evict():
    dropped: list[tuple[str, int]] = []
    lru: LRU[str, int] = LRU(2, lambda k, v: dropped.append((k, v)))
    made = iter(range(100))
    for key in ("a", "b", "a", "c", "b"):
        lru.get(key, lambda: next(made))
    # a=0, b=1, (a used), c=2 drops b, b=3 drops a
    assert lru.keys() == ["c", "b"] and dropped == [("b", 1), ("a", 0)]
    assert (lru.loads, lru.evictions) == (4, 2)
    assert lru.peek("c") == 2 and lru.keys() == ["c", "b"]  # peeking is not a use
    nothing: LRU[str, int] = LRU(0)
    assert nothing.get("x", lambda: 7) == 7 and len(nothing) == 0 and nothing.evictions == 1


def test_llama_merged_host_keeps_its_models_in_the_one_lru(monkeypatch, tmp_path):
    """LlamaMergedHost without llama.cpp: its model loading stubbed, the LRU is what remains."""
    from afinar.models.engines import llamacpp

    made: list[Path] = []
    contexts: list[int] = []

    class FakeModel:
        max_batch = 1  # one sequence a context: no batch scheduler

        def __init__(self, gguf, folder, settings, n_ctx):
            made.append(gguf)
            contexts.append(n_ctx)

    monkeypatch.setattr(llamacpp, "LlamaCppModel", FakeModel)
    monkeypatch.setattr(llamacpp, "merged_gguf", lambda adapter, folder, settings: adapter)
    base_model = type("M", (), {"llama": type("L", (), {"n_ctx": lambda self: 64 * 8})(),
                                "n_ctx_seq": 64, "generation_config": None})()
    info = ModelInfo("tiny", "chat", "hf", tmp_path, "registered", info={"hf_folder": "x"})
    base = LoadedModel(info, base_model, object(), "cpu", 0.0, "llama.cpp",
                       lock=threading.Lock())
    host = llamacpp.LlamaMergedHost(base, 2, settings=None)
    fts = {}
    for n in ("a", "b", "c"):
        (tmp_path / n).mkdir()
        fts[n] = ModelInfo(f"ft:tiny:{n}", "chat", "peft", tmp_path / n, "registered",
                           base_model="tiny")
    lms = {n: host.get(fts[n]) for n in ("a", "b")}
    assert host.get(fts["a"]) is lms["a"]  # a use: b is now the least recent
    host.get(fts["c"])
    assert host.loaded == [lms["a"].adapter, host.get(fts["c"]).adapter]
    assert (host.loads, host.evictions) == (3, 1) and made == [tmp_path / n for n in "abc"]
    assert contexts == [64, 64, 64]  # a sequence's context, not the batched context (64 * 8)
    assert host.get(fts["b"]) is not lms["b"] and host.loads == 4  # b was dropped: made anew
