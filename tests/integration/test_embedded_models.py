"""The real embedded models from the wheels: load (GGUF conversion cache), template, seeded
generation, streaming, stop tokens, embeddings, and the CLI as the README shows it."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from afinar.models import (
    Catalog,
    Generator,
    SamplingParams,
    end_of_turn_ids,
    load_causal_lm,
    load_embedding_model,
    render_text,
)
from tests.helpers import home_at

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "Name a primary colour."}]


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    """A home of its own, without the session's shared conversion: this module tests it."""
    with home_at(tmp_path_factory.mktemp("embedded") / "home") as home:
        yield home


@pytest.fixture(scope="module")
def smol(module_home):
    """First load converts the GGUF into the cache; the second reads the cache."""
    info = Catalog().get("smollm2-135m-instruct")
    first = load_causal_lm(info)
    assert first.loaded_from == "gguf"
    second = load_causal_lm(info)
    assert second.loaded_from == "gguf-cache"
    return second


def test_catalog_has_both_builtins(module_home):
    models = {m.id: m for m in Catalog().list()}
    chat, emb = models["smollm2-135m-instruct"], models["all-minilm-l6-v2"]
    assert chat.available and emb.available
    assert (chat.kind, chat.format, chat.context_length) == ("chat", "gguf", 8192)
    assert 130e6 < chat.parameters < 140e6
    assert (emb.kind, emb.context_length) == ("embedding", 256)
    assert 20e6 < emb.parameters < 25e6


def test_conversion_cache_is_a_plain_safetensors_folder(smol, module_home):
    folders = list((module_home / "models" / "gguf-cache").iterdir())
    assert len(folders) == 1
    names = {p.name for p in folders[0].iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "afinar-source.json"} <= names
    assert getattr(smol.model.config, "quantization_config", None) is None  # trainable, saveable


def test_template_and_end_of_turn(smol):
    text = render_text(smol.tokenizer, QUESTION)
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>user\nName a primary colour.<|im_end|>\n<|im_start|>assistant\n")
    eot = end_of_turn_ids(smol.tokenizer, smol.model.generation_config)
    assert smol.tokenizer.convert_ids_to_tokens(eot) == ["<|im_end|>"]


def test_greedy_answer_stops_at_end_of_turn(smol):
    r = Generator(smol).chat(QUESTION, SamplingParams(temperature=0, max_tokens=200))
    assert r.finish_reason == "stop" and r.completion_tokens < 200
    assert r.text.strip() and "<|im_end|>" not in r.text
    assert any(c in r.text.lower() for c in ("red", "blue", "yellow"))
    n_text = len(smol.tokenizer(r.text, add_special_tokens=False)["input_ids"])
    assert r.completion_tokens == n_text + 1  # the text plus <|im_end|>


def test_seeded_sampling_and_streaming(smol):
    gen = Generator(smol)
    p = dict(temperature=0.9, max_tokens=40)
    a = gen.chat(QUESTION, SamplingParams(seed=7, **p))
    s = gen.stream(QUESTION, SamplingParams(seed=7, **p))
    deltas = list(s)
    assert "".join(deltas) == s.result.text == a.text
    assert len(deltas) > 3
    assert gen.chat(QUESTION, SamplingParams(seed=8, **p)).text != a.text


def test_stop_string(smol):
    r = Generator(smol).chat(QUESTION, SamplingParams(temperature=0, max_tokens=100, stop=["."]))
    assert r.finish_reason == "stop" and "." not in r.text and r.text


def test_embedding_model(module_home):
    st = load_embedding_model(Catalog().get("all-minilm-l6-v2"))
    v = st.encode(["How do I install a package?", "apt-get install installs packages",
                   "The capital of France is Paris."], normalize_embeddings=True)
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_cli_chat_is_reproducible(module_home, smol):
    exe = Path(sys.executable).with_name("afinar")
    cmd = [str(exe), "chat", "-m", "smollm2-135m-instruct", "--seed", "7",
           "Name a primary colour."]
    env = {**os.environ, "AFINAR_HOME": str(module_home)}
    a = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    b = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.strip()
    assert "from the converted cache" in a.stderr
