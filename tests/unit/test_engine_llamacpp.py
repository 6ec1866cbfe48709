"""The llama.cpp engine against the transformers reference: the same greedy text for the base and
for LoRA fine-tunes (merged GGUF models, the default, and runtime LoRA on the shared base context),
also under interleaved concurrent requests; with q8_0 weights (the default) and f32 (the
reference's exact weights). Seeded sampling through llama.cpp's sampler is reproducible.
On the embedded model q8_0 is not exact on every prompt: tests/integration/test_engine_real.py.

Needs the ``llama`` extra (llama-cpp-python, compiled from its sdist) and llama.cpp's conversion
scripts (``make`` installs both); without them these tests skip and say why."""


import pytest

from afinar.models import Catalog, Generator, ModelCache, SamplingParams
from afinar.models.engines.llamacpp import unavailable_reason
from tests.helpers import all_at_once
from tests.unit.test_adapters import ANSWERS, GREEDY, PROMPT, train_adapter




pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
PROMPTS = ["hello", "question 3", "Debian is", "Red, blue and", "tool 7 8 9"]


@pytest.fixture(params=[("q8_0", "merged"), ("f32", "runtime")], ids=lambda p: "-".join(p))
def llama_settings(home, request):
    from afinar.settings import get_settings

    weights, adapters = request.param
    return get_settings().model_copy(update={"engine": "llama.cpp", "llama_weights": weights,
                                             "llama_adapters": adapters})


def test_base_greedy_equals_the_transformers_reference(tiny_model_template, llama_settings):
    Catalog().add("tiny", tiny_model_template)
    ref, llama = ModelCache().get("tiny"), ModelCache().get("tiny", settings=llama_settings)
    assert llama.loaded_from == "llama.cpp" and ref.loaded_from == "hf"
    p = SamplingParams(temperature=0, max_tokens=16)
    for text in PROMPTS:
        msgs = [{"role": "user", "content": text}]
        want, got = Generator(ref).chat(msgs, p), Generator(llama).chat(msgs, p)
        assert (got.text, got.completion_tokens) == (want.text, want.completion_tokens), text
    # stop strings and max_tokens behave as on the reference (same stream code)
    p = SamplingParams(temperature=0, max_tokens=5, stop=["e"])
    assert Generator(llama).chat([{"role": "user", "content": "hello"}], p).text == \
        Generator(ref).chat([{"role": "user", "content": "hello"}], p).text


def test_adapters_on_the_llama_base_equal_the_reference(tiny_model_template, tmp_path,
                                                        llama_settings):
    Catalog().add("tiny", tiny_model_template)
    ids = [train_adapter(f"ft:tiny:afinar:{n}:{i:08d}", a, tmp_path / n, seed=i)
           for i, (n, a) in enumerate(ANSWERS.items())]
    ref = ModelCache(max_models=1)
    want = {m: Generator(ref.get(m)).chat(PROMPT, GREEDY).text for m in [*ids, "tiny"]}
    assert len(set(want.values())) == 3
    cache = ModelCache(max_models=1, max_adapters=1)  # every switch evicts and reloads
    got: list[tuple[str, str]] = []
    order = [*ids, "tiny"] * 4
    all_at_once(lambda m: got.append(
        (m, Generator(cache.get(m, settings=llama_settings)).chat(PROMPT, GREEDY).text)), order)
    assert len(got) == len(order)
    assert [(m, t) for m, t in got if t != want[m]] == []
    host = cache.adapters("tiny")
    assert host.evictions >= 1 and len(host.loaded) == 1


def test_seeded_sampling_is_reproducible(tiny_model_template, home):
    from afinar.settings import get_settings

    Catalog().add("tiny", tiny_model_template)
    llama = ModelCache().get("tiny", settings=get_settings().model_copy(
        update={"engine": "llama.cpp"}))
    msgs = [{"role": "user", "content": "hello"}]

    def text(seed, **kw):
        return Generator(llama).chat(msgs, SamplingParams(temperature=1.5, top_p=0.9,
                                                          max_tokens=12, seed=seed, **kw)).text

    assert text(1) == text(1) and text(2) == text(2)
    assert len({text(s) for s in range(5)}) > 1  # the seed matters
    # with a penalty, decoding goes through transformers' processors and torch's sampler
    assert text(3, frequency_penalty=1.0) == text(3, frequency_penalty=1.0)


def test_a_k_quant_is_served_from_llamas_quantizer(tiny_model_template, tmp_path, home):
    """``llama_weights=q4_k_m`` (issue 17): the base and a merged LoRA fine-tune are converted
    to f32 and quantised by llama.cpp's quantizer (the GGUF says Q4_K_M; the f32 step is not
    kept), and both answer. (q4 is not exact on the tiny random model: what it keeps on a
    real one is ``benchmarks/quantization.py``.)"""
    import llama_cpp
    from gguf import GGUFReader

    from afinar.settings import get_settings

    Catalog().add("tiny", tiny_model_template)
    ft = train_adapter("ft:tiny:afinar:q4:00000001", ANSWERS["colours"], tmp_path / "ft")
    q4 = get_settings().model_copy(update={"engine": "llama.cpp", "llama_weights": "q4_k_m"})
    cache = ModelCache(max_models=1)
    for model in ("tiny", ft):
        lm = cache.get(model, settings=q4)
        assert Generator(lm).chat(PROMPT, GREEDY).completion_tokens > 0
    made = sorted((q4.models_dir / "llama-gguf").glob("*q4_k_m/*"))
    assert [p.name for p in made] == ["model.gguf", "model.gguf"], made
    for p in made:
        ftype = GGUFReader(str(p)).fields["general.file_type"].contents()
        assert ftype == llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, (p, ftype)
