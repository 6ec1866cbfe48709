"""llama.cpp (through ``llama-cpp-python``, the ``llama`` extra) as an inference engine.

Weights: a model's Hugging Face folder (for a GGUF built-in, the fp32 safetensors folder it is
converted to once, ``loader.hf_folder``) is converted once more with llama.cpp's own
``convert_hf_to_gguf.py`` into ``AFINAR_HOME/models/llama-gguf/<key>-<type>/`` in
``AFINAR_LLAMA_WEIGHTS``: ``q8_0`` (default, 145 MB for the 135M model, the fastest), ``f16``, or
``f32`` (exactly the weights of the transformers reference: the same greedy text). q8_0 is
approximate: llama.cpp also rounds activations to 8 bits in its q8_0 matmuls, and on the embedded
SmolLM2 (whose greedy choices are often near-ties) that changes the greedy text of many prompts
while the top token agrees with the reference's at almost every step
(``tests/integration/test_engine_real.py`` prints both counts); set ``f16`` or ``f32`` where
outputs must match the reference.

Fine-tunes: with ``AFINAR_LLAMA_ADAPTERS=merged`` (default) a LoRA fine-tune is merged into its
base in fp32 (PEFT) and converted to a GGUF model of its own in the same weight type
(``LlamaMergedHost``: at most ``max_adapters`` per base, least recently used dropped), so it runs
at the base's speed; ``runtime`` instead converts the adapter with ``convert_lora_to_gguf.py``
and sets it per request on the base's shared context (``LlamaAdapterHost``: little memory, but
the LoRA matmuls and graph nodes cost throughput per token). DoRA and prompt tuning are served by
the transformers engine.

Threads: ``AFINAR_LLAMA_THREADS`` per model, default 1. llama.cpp's threads spin at a barrier after
every op; with more threads than free cores (a loaded machine) decoding slows by orders of
magnitude, and on this 2-core CPU one thread decodes the 135M q8_0 model about as fast as two.
Models of different fine-tunes decode concurrently (one context and lock each). Models load with
llama.cpp's plain CPU buffers (``gguf.no_extra_buffers``): its AMX and repacked q8_0/q4 buffer
types crash ``llama_decode`` on CPUs with AMX.

Batching: with ``AFINAR_MAX_BATCH`` > 1 (default 8) a model's context holds that many sequences
(``n_seq_max``, KV cells of their own, the model's context each), and its concurrent requests
are decoded together, each on its own sequence id, by the scheduler of ``models/batching.py``
with ``engines/llamacpp_batch.py``'s backend; ``1`` is one ``generate`` at a time.

Tokens: afinar tokenizes with the model's own Hugging Face tokenizer and hands llama.cpp token
ids, so llama.cpp's tokenizer is never used (an unrecognised BPE pre-tokenizer is therefore
written as ``default`` rather than refused). Decoding runs here with ``llama_decode``, one token a
step: greedy without logits processors is a numpy argmax over a view of llama.cpp's logits (no
copy), sampling without processors is llama.cpp's own sampler chain (temperature, top-p, a draw
seeded from the caller's ``torch.manual_seed``); with processors (penalties, constrained JSON) the
logits are copied into a tensor and transformers' processors, warpers and ``torch.multinomial``
apply as on the reference.

The conversion scripts come from the llama-cpp-python sdist (``make`` extracts them into
``.venv/share/afinar-llama.cpp``; ``AFINAR_LLAMA_CONVERT`` names another folder).
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from afinar.models import adapters as peft_adapters
from afinar.models.catalog import ModelInfo
from afinar.models.batching import Scheduler
from afinar.models.engines.base import ENGINES, Engine
from afinar.models.engines.llamacpp_batch import LlamaBackend
from afinar.models.finetuned import check_fingerprint, read_manifest
from afinar.models.gguf import (
    EngineUnavailable,
    convert_dir,
    merge_lora,
    no_extra_buffers,
    run_convert,
    write_gguf_as,
)
from afinar.models.loader import (
    LoadedModel,
    Progress,
    hf_folder,
    load_causal_lm,
    quiet_transformers,
)
from afinar.settings import Settings
from afinar.store.atomic import atomic_dir


_LOADING = threading.Lock()  # no_extra_buffers patches llama-cpp-python: one model loads at a time


def unavailable_reason() -> str | None:
    """Why this engine cannot run here (llama-cpp-python or the conversion scripts missing), or
    None when it can."""
    try:
        require_llama_cpp()
        convert_dir()
    except EngineUnavailable as e:
        return e.message
    return None


def require_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise EngineUnavailable(
            "the llama.cpp engine needs llama-cpp-python: pip install 'afinar[llama]' "
            f"(it compiles llama.cpp, ~5 minutes) ({e})") from e
    return llama_cpp


def _key(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        for f in sorted(p.iterdir()) if p.is_dir() else [p]:
            if f.is_file() and f.suffix in (".json", ".safetensors", ".bin"):
                st = f.stat()
                h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def base_gguf(folder: Path, settings: Settings, progress: Progress | None = None) -> Path:
    """The GGUF of an HF folder in ``settings.llama_weights`` (converted once, cached by the
    folder's files and the weight type)."""
    outtype = settings.llama_weights
    dest = settings.models_dir / "llama-gguf" / f"{_key(folder)}-{outtype}"
    out = dest / "model.gguf"
    if not out.is_file():
        if progress:
            progress(f"converting {folder.name} to GGUF {outtype} for llama.cpp (once)")
        with atomic_dir(dest) as tmp:
            to_gguf(folder, tmp / "model.gguf", settings)
    return out


def to_gguf(folder: Path, out: Path, settings: Settings, what: str | None = None) -> Path:
    """An HF folder as a GGUF in ``settings.llama_weights`` (``gguf.write_gguf_as``, as
    ``afinar models export --quant`` makes it); a k-quant's f32 step is not kept."""
    f32 = out.with_name("f32.gguf")
    try:
        return write_gguf_as(folder, out, settings.llama_weights, f32, settings.llama_threads,
                             what)
    finally:
        f32.unlink(missing_ok=True)


def lora_gguf(adapter: Path, base_folder: Path, settings: Settings) -> Path:
    """A LoRA adapter as a llama.cpp runtime adapter (``llama_adapters=runtime``)."""
    dest = settings.models_dir / "llama-gguf" / f"lora-{_key(adapter, base_folder)}"
    out = dest / "adapter.gguf"
    if not out.is_file():
        with atomic_dir(dest) as tmp:
            run_convert("convert_lora_to_gguf.py", [str(adapter), "--base", str(base_folder),
                         "--outfile", str(tmp / "adapter.gguf"), "--outtype", "f32"],
                         str(adapter))
    return out


def merged_gguf(adapter: Path, base_folder: Path, settings: Settings,
                progress: Progress | None = None) -> Path:
    """A LoRA fine-tune merged into its base's weights (PEFT ``merge_and_unload`` in fp32), as a
    GGUF of its own in ``settings.llama_weights`` (``llama_adapters=merged``; converted once)."""
    outtype = settings.llama_weights
    dest = settings.models_dir / "llama-gguf" / f"merged-{_key(adapter, base_folder)}-{outtype}"
    out = dest / "model.gguf"
    if out.is_file():
        return out
    if progress:
        progress(f"merging {adapter.name} into its base and converting it to GGUF {outtype} "
                 "for llama.cpp (once)")
    with atomic_dir(dest) as tmp:
        hf = merge_lora(adapter, base_folder, tmp / "hf")
        to_gguf(hf, tmp / "model.gguf", settings, str(adapter))
        shutil.rmtree(hf)
    return out


class LlamaCppModel:
    """A llama.cpp model and context that answers transformers' ``generate`` (what
    ``GenerationStream`` passes), plus ``config``/``generation_config`` from the HF folder."""

    def __init__(self, gguf: Path, folder: Path, settings: Settings, n_ctx: int):
        import llama_cpp._internals as internals

        from transformers import AutoConfig, GenerationConfig

        llama_cpp = require_llama_cpp()
        self.config = AutoConfig.from_pretrained(str(folder))
        try:
            self.generation_config = GenerationConfig.from_pretrained(str(folder))
        except OSError:
            self.generation_config = GenerationConfig.from_model_config(self.config)
        threads = settings.llama_threads
        self.gguf = gguf
        self.n_ctx_seq, self.max_batch = n_ctx, settings.max_batch  # a sequence's context
        with _LOADING, no_extra_buffers():  # AMX/repacked buffers crash llama_decode (gguf.py)
            self.llama = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads,
                                         n_threads_batch=threads, logits_all=False,
                                         verbose=False)
            if self.max_batch > 1:  # Llama takes no n_seq_max: its context is made again
                params = self.llama.context_params  # with a sequence (KV cells) per request
                params.n_seq_max, params.kv_unified = self.max_batch, False
                params.n_ctx = n_ctx * self.max_batch
                old, self.llama._ctx = self.llama._ctx, internals.LlamaContext(
                    model=self.llama._model, params=params, verbose=False)
                old.close()
        self.n_vocab = self.llama.n_vocab()
        self.n_batch = self.llama.n_batch
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        weakref.finalize(self, llama_cpp.llama_batch_free, self._batch)
        self.device = "cpu"

    def eval(self) -> LlamaCppModel:  # the transformers idiom, for callers that call it
        return self

    def _decode(self, tokens: list[int], pos: int) -> None:
        """Append ``tokens`` (positions ``pos``...) to sequence 0; logits for the last one."""
        llama_cpp = require_llama_cpp()
        b = self._batch
        for i in range(0, len(tokens), self.n_batch):
            chunk = tokens[i:i + self.n_batch]
            b.n_tokens = len(chunk)
            for j, t in enumerate(chunk):
                b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = t, pos + i + j, 1, False
                b.seq_id[j][0] = 0
            b.logits[len(chunk) - 1] = True
            rc = llama_cpp.llama_decode(self.llama._ctx.ctx, b)
            if rc != 0:
                raise EngineUnavailable(f"llama.cpp could not decode (llama_decode rc={rc})")

    def _logits(self):
        """The last position's logits, a view on llama.cpp's buffer (valid until the next
        decode; never copied unless a processor needs a tensor of its own)."""
        import numpy as np

        llama_cpp = require_llama_cpp()
        ptr = llama_cpp.llama_get_logits_ith(self.llama._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _sampler(self, temperature: float | None, top_p: float | None, seed: int,
                 top_k: int | None = None, min_p: float | None = None):
        """llama.cpp's own sampler chain: temperature, top-k, top-p, min-p, then a draw seeded
        by the caller's torch seed (the order of transformers' warpers)."""
        llama_cpp = require_llama_cpp()
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if temperature and temperature != 1.0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(temperature))
        if top_k:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(top_k))
        if top_p is not None and top_p < 1.0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(top_p, 1))
        if min_p:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_min_p(min_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        return chain

    def generate(self, input_ids, max_new_tokens: int, eos_token_id=None, streamer=None,
                 stopping_criteria=None, logits_processor=None, do_sample: bool = False,
                 temperature: float | None = None, top_p: float | None = None,
                 top_k: int | None = None, min_p: float | None = None, **_: Any):
        import torch

        llama_cpp = require_llama_cpp()
        eos = set([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id or [])
        prompt = input_ids[0].to("cpu").tolist()
        n = len(prompt)
        buf = torch.zeros((1, n + max_new_tokens), dtype=torch.long)
        buf[0, :n] = torch.tensor(prompt)
        if streamer is not None:
            streamer.put(buf[:, :n])  # the prompt, as transformers does
        processors = list(logits_processor or ())
        warpers, chain = [], None
        if do_sample and processors:  # transformers' warpers after its processors
            from transformers import TemperatureLogitsWarper, TopPLogitsWarper

            if temperature and temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(temperature))
            if top_p is not None and top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p))
        elif do_sample:  # no processor needs the logits: llama.cpp samples them in place
            chain = self._sampler(temperature, top_p,
                                  int(torch.randint(0, 2**31 - 1, (1,))),  # the caller's seed
                                  top_k=top_k, min_p=min_p)
        # no KV state from another request (another adapter's, too)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.llama._ctx.ctx), True)
        self._decode(prompt, 0)
        try:
            for _ in range(max_new_tokens):
                scores = None
                if chain is not None:
                    tok = int(llama_cpp.llama_sampler_sample(chain, self.llama._ctx.ctx, -1))
                elif not processors:
                    tok = int(self._logits().argmax())
                else:
                    ids = buf[:, :n]
                    scores = torch.from_numpy(self._logits().copy())[None]
                    for proc in processors:
                        scores = proc(ids, scores)
                    if do_sample:
                        for w in warpers:
                            scores = w(ids, scores)
                        tok = int(torch.multinomial(torch.softmax(scores, -1), 1)[0, 0])
                    else:
                        tok = int(scores[0].argmax())
                buf[0, n] = tok
                n += 1
                if streamer is not None:
                    streamer.put(buf[0, n - 1:n])
                if tok in eos or any(bool(c(buf[:, :n], scores).any())
                                     for c in stopping_criteria or ()):
                    break
                if n < buf.shape[1]:
                    self._decode([tok], n - 1)
        finally:
            if chain is not None:
                llama_cpp.llama_sampler_free(chain)
            if streamer is not None:
                streamer.end()
        return buf[:, :n].clone()


def with_scheduler(lm: LoadedModel) -> LoadedModel:
    """``lm`` with the batch scheduler of its context (``llamacpp_batch``), when its context has
    a sequence per request (``max_batch`` > 1); adapters set at run time on a shared context
    share it, one adapter per batch."""
    model = lm.model
    if model.max_batch > 1:
        lm.batcher = Scheduler(LlamaBackend(model, model.max_batch), lm.lock, model.max_batch)
    return lm


class LlamaAdapterHost(peft_adapters.AdapterLRU):
    """LoRA adapters (GGUF) on one llama.cpp base, set per request on its shared context
    (``llama_adapters=runtime``)."""

    def __init__(self, base: LoadedModel, max_adapters: int, settings: Settings):
        super().__init__(base, max_adapters)
        self.settings = settings
        self.folder = Path(base.info.info.get("hf_folder", ""))

    def _load(self, name: str, path: Path) -> Any:
        llama_cpp = require_llama_cpp()
        gguf = lora_gguf(path, self.folder, self.settings)
        handle = llama_cpp.llama_adapter_lora_init(self.base.model.llama.model,
                                                   str(gguf).encode())
        if not handle:
            raise EngineUnavailable(f"llama.cpp could not load the adapter {gguf}")
        return handle

    def _unload(self, name: str, handle: Any) -> None:
        if self._active == name:
            self._select(None)
        require_llama_cpp().llama_adapter_lora_free(handle)

    def _select(self, name: str | None) -> None:
        if name == self._active:
            return
        llama_cpp = require_llama_cpp()
        ctx = self.base.model.llama._ctx.ctx
        if name is None:
            rc = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._loaded.peek(name))
            rc = llama_cpp.llama_set_adapters_lora(ctx, arr, 1, (ctypes.c_float * 1)(1.0))
        if rc != 0:
            raise EngineUnavailable(f"llama.cpp could not set adapter {name} (rc={rc})")
        self._active = name


class LlamaMergedHost:
    """LoRA fine-tunes of one llama.cpp base, each merged into the base weights as a llama.cpp
    model and context of its own (``llama_adapters=merged``, the default): a request runs at the
    base's speed, with no adapter switch and no LoRA matmuls per token, and models of different
    fine-tunes run concurrently. At most ``max_adapters`` of them are kept (least recently used
    dropped; one still generating is freed when its last request ends). Memory per model: its
    GGUF (145 MB in q8_0 for the 135M model) plus its KV cache."""

    def __init__(self, base: LoadedModel, max_adapters: int, settings: Settings):
        if max_adapters < 1:
            raise ValueError("max_adapters must be at least 1")
        self.base, self.max_adapters, self.settings = base, max_adapters, settings
        self.folder = Path(base.info.info.get("hf_folder", ""))
        self._lock = threading.Lock()
        # (id, path) -> its model; a dropped one is freed when no request holds it any more
        self._models: peft_adapters.LRU[tuple[str, str], LoadedModel] = peft_adapters.LRU(
            max_adapters)

    @property
    def loaded(self) -> list[str]:
        return [lm.adapter for lm in self._models.values()]

    @property
    def loads(self) -> int:
        return self._models.loads

    @property
    def evictions(self) -> int:
        return self._models.evictions

    def get(self, info: ModelInfo) -> LoadedModel:
        with self._lock:
            return self._models.get((info.id, str(info.path)), lambda: self._load(info))

    def _load(self, info: ModelInfo) -> LoadedModel:
        t0 = time.perf_counter()
        check_fingerprint(read_manifest(info.path), self.base.tokenizer,
                          self.base.model.generation_config, info.id)
        gguf = merged_gguf(info.path, self.folder, self.settings)
        model = LlamaCppModel(gguf, self.folder, self.settings, n_ctx=self.base.model.n_ctx_seq)
        return with_scheduler(LoadedModel(info, model, self.base.tokenizer, "cpu",
                                          time.perf_counter() - t0, "adapter",
                                          lock=threading.Lock(),
                                          adapter=peft_adapters.adapter_name(info)))


@ENGINES.register("llama.cpp")
class LlamaCppEngine(Engine):
    name = "llama.cpp"

    def __init__(self) -> None:
        require_llama_cpp()
        convert_dir()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return unavailable_reason()

    def shares_base(self, info: ModelInfo) -> bool:
        return peft_adapters.shares_base(info) and not peft_adapters.adapter_config(
            info.path).get("use_dora")

    def load(self, info: ModelInfo, settings: Settings,
             progress: Progress | None = None) -> LoadedModel:
        if info.format == "peft":  # DoRA, prompt tuning: no llama.cpp form
            return load_causal_lm(info, settings, progress)
        from transformers import AutoConfig, AutoTokenizer

        quiet_transformers()
        t0 = time.perf_counter()
        folder, _ = hf_folder(info, settings, progress)
        gguf = base_gguf(folder, settings, progress)
        tok = AutoTokenizer.from_pretrained(str(folder))
        probe = LoadedModel(info, None, tok, "cpu", 0, "")
        probe.model = type("M", (), {"config": AutoConfig.from_pretrained(str(folder))})
        model = LlamaCppModel(gguf, folder, settings, n_ctx=probe.context_length)
        info = ModelInfo(**{**info.__dict__, "info": {**info.info, "hf_folder": str(folder)}})
        return with_scheduler(LoadedModel(info, model, tok, "cpu", time.perf_counter() - t0,
                                          "llama.cpp", lock=threading.Lock()))

    def adapter_host(self, base: LoadedModel, max_adapters: int,
                     settings: Settings) -> LlamaMergedHost | LlamaAdapterHost:
        if settings.llama_adapters == "merged":
            return LlamaMergedHost(base, max_adapters, settings)
        return LlamaAdapterHost(base, max_adapters, settings)


__all__ = ["EngineUnavailable", "LlamaAdapterHost", "LlamaCppEngine", "LlamaCppModel",
           "LlamaMergedHost", "base_gguf", "lora_gguf", "merged_gguf"]
