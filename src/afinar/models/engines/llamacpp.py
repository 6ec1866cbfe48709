"""llama.cpp (through ``llama-cpp-python``, the ``llama`` extra) as an inference engine.

Weights: a model's Hugging Face folder (for a GGUF built-in, the fp32 safetensors folder it is
converted to once, ``loader.hf_folder``) is converted once more with llama.cpp's own
``convert_hf_to_gguf.py`` into ``AFINAR_HOME/models/llama-gguf/<key>/`` (``f32`` by default, so
the weights are exactly those of the transformers reference; ``AFINAR_LLAMA_GGUF_TYPE=q8_0`` for
a smaller, approximate copy). A LoRA fine-tune is converted with ``convert_lora_to_gguf.py`` and
applied per request to the shared base context with llama.cpp's adapter API (at most
``max_adapters`` loaded per base, least recently used freed). DoRA and prompt tuning have no
llama.cpp form: those fine-tunes are served by the transformers engine.

Tokens: afinar tokenizes with the model's own Hugging Face tokenizer and hands llama.cpp token
ids, so llama.cpp's tokenizer is never used (an unrecognised BPE pre-tokenizer is therefore
written as ``default`` rather than refused). Decoding is done here, step by step, on llama.cpp's
logits: transformers' logits processors (penalties, constrained JSON) apply as they are, greedy is
an argmax, and sampling uses transformers' own temperature/top-p warpers and ``torch.multinomial``
under the caller's ``torch.manual_seed``.

The conversion scripts come from the llama-cpp-python sdist (``make`` extracts them into
``.venv/share/afinar-llama.cpp``; ``AFINAR_LLAMA_CONVERT`` names another folder).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from afinar.errors import AfinarError
from afinar.models import adapters as peft_adapters
from afinar.models.catalog import ModelInfo
from afinar.models.engines.base import Engine
from afinar.models.loader import LoadedModel, Progress, hf_folder, load_causal_lm
from afinar.settings import Settings
from afinar.store.atomic import atomic_dir


class EngineUnavailable(AfinarError):
    code = "engine_unavailable"
    http_status = 500


_CONVERT = r"""
import runpy, sys
d = sys.argv[1]
sys.path[:0] = [d, d + "/gguf-py"]
import conversion.base as b
_pre = b.TextModel.get_vocab_base_pre
def pre(self, tok):  # afinar never uses llama.cpp's tokenizer: token ids are passed in
    try:
        return _pre(self, tok)
    except NotImplementedError:
        return "default"
b.TextModel.get_vocab_base_pre = pre
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def convert_dir() -> Path:
    d = Path(os.environ.get("AFINAR_LLAMA_CONVERT") or Path(sys.prefix) / "share"
             / "afinar-llama.cpp")
    if not (d / "convert_hf_to_gguf.py").is_file():
        raise EngineUnavailable(
            f"llama.cpp's conversion scripts are not in {d}: run `make` (it extracts them from "
            "the llama-cpp-python sdist) or set AFINAR_LLAMA_CONVERT to a llama.cpp checkout")
    return d


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


def _run_convert(script: str, args: list[str], what: str) -> None:
    d = convert_dir()
    r = subprocess.run([sys.executable, "-c", _CONVERT, str(d), str(d / script), *args],
                       capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-5:])
        raise EngineUnavailable(f"converting {what} to GGUF failed: {tail}")


def base_gguf(folder: Path, settings: Settings, progress: Progress | None = None) -> Path:
    """The GGUF of an HF folder (converted once, cached by the folder's files)."""
    outtype = os.environ.get("AFINAR_LLAMA_GGUF_TYPE", "f32")
    dest = settings.models_dir / "llama-gguf" / f"{_key(folder)}-{outtype}"
    out = dest / "model.gguf"
    if not out.is_file():
        if progress:
            progress(f"converting {folder.name} to GGUF {outtype} for llama.cpp (once)")
        with atomic_dir(dest) as tmp:
            _run_convert("convert_hf_to_gguf.py", [str(folder), "--outfile",
                         str(tmp / "model.gguf"), "--outtype", outtype], str(folder))
    return out


def lora_gguf(adapter: Path, base_folder: Path, settings: Settings) -> Path:
    dest = settings.models_dir / "llama-gguf" / f"lora-{_key(adapter, base_folder)}"
    out = dest / "adapter.gguf"
    if not out.is_file():
        with atomic_dir(dest) as tmp:
            _run_convert("convert_lora_to_gguf.py", [str(adapter), "--base", str(base_folder),
                         "--outfile", str(tmp / "adapter.gguf"), "--outtype", "f32"],
                         str(adapter))
    return out


class LlamaCppModel:
    """A llama.cpp model and context that answers transformers' ``generate`` (what
    ``GenerationStream`` passes), plus ``config``/``generation_config`` from the HF folder."""

    def __init__(self, gguf: Path, folder: Path, settings: Settings, n_ctx: int):
        from transformers import AutoConfig, GenerationConfig

        llama_cpp = require_llama_cpp()
        self.config = AutoConfig.from_pretrained(str(folder))
        try:
            self.generation_config = GenerationConfig.from_pretrained(str(folder))
        except OSError:
            self.generation_config = GenerationConfig.from_model_config(self.config)
        threads = settings.effective_threads
        self.llama = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads,
                                     n_threads_batch=threads, logits_all=False, verbose=False)
        self.n_vocab = self.llama.n_vocab()
        self.device = "cpu"

    def eval(self) -> LlamaCppModel:  # the transformers idiom, for callers that call it
        return self

    def _logits(self):
        import numpy as np
        import torch

        llama_cpp = require_llama_cpp()
        ptr = llama_cpp.llama_get_logits_ith(self.llama._ctx.ctx, -1)
        return torch.from_numpy(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())[None]

    def generate(self, input_ids, max_new_tokens: int, eos_token_id=None, streamer=None,
                 stopping_criteria=None, logits_processor=None, do_sample: bool = False,
                 temperature: float | None = None, top_p: float | None = None, **_: Any):
        import torch
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        eos = set([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id or [])
        warpers = []
        if do_sample:
            if temperature and temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(temperature))
            if top_p is not None and top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p))
        ids = input_ids.to("cpu")
        if streamer is not None:
            streamer.put(ids)  # the prompt, as transformers does
        self.llama.reset()  # no KV state from another request (another adapter's, too)
        self.llama.eval(ids[0].tolist())
        try:
            for _ in range(max_new_tokens):
                scores = self._logits()
                for proc in logits_processor or ():
                    scores = proc(ids, scores)
                if do_sample:
                    for w in warpers:
                        scores = w(ids, scores)
                    tok = int(torch.multinomial(torch.softmax(scores, -1), 1)[0, 0])
                else:
                    tok = int(scores[0].argmax())
                ids = torch.cat([ids, torch.tensor([[tok]])], 1)
                if streamer is not None:
                    streamer.put(torch.tensor([tok]))
                if tok in eos or any(bool(c(ids, scores).any()) for c in stopping_criteria or ()):
                    break
                self.llama.eval([tok])
        finally:
            if streamer is not None:
                streamer.end()
        return ids


class LlamaAdapterHost:
    """LoRA adapters (GGUF) on one llama.cpp base, LRU-ordered; all changes under the base lock."""

    def __init__(self, base: LoadedModel, max_adapters: int, settings: Settings):
        if max_adapters < 1:
            raise ValueError("max_adapters must be at least 1")
        self.base, self.max_adapters, self.settings = base, max_adapters, settings
        self.folder = Path(base.info.info.get("hf_folder", ""))
        self._loaded: OrderedDict[str, Any] = OrderedDict()  # adapter name -> llama adapter
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._active: str | None = None
        self.loads = self.evictions = 0
        base.activate_hook = lambda: self._set(None)

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    def get(self, info: ModelInfo) -> LoadedModel:
        from afinar.models.finetuned import check_fingerprint, read_manifest

        key = (info.id, str(info.path))
        with self.base.lock:
            if key in self._models:
                lm = self._models[key]
                self._ensure(lm.adapter, info.path)
                return lm
            t0 = time.perf_counter()
            check_fingerprint(read_manifest(info.path), self.base.tokenizer,
                              self.base.model.generation_config, info.id)
            name = peft_adapters.adapter_name(info)
            self._ensure(name, info.path)
            lm = LoadedModel(info, self.base.model, self.base.tokenizer, "cpu",
                             time.perf_counter() - t0, "adapter", lock=self.base.lock,
                             activate_hook=lambda: self._activate(name, info.path), adapter=name)
            self._models[key] = lm
            return lm

    def _ensure(self, name: str, path: Path) -> None:
        llama_cpp = require_llama_cpp()
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return
        gguf = lora_gguf(path, self.folder, self.settings)
        handle = llama_cpp.llama_adapter_lora_init(self.base.model.llama.model,
                                                   str(gguf).encode())
        if not handle:
            raise EngineUnavailable(f"llama.cpp could not load the adapter {gguf}")
        self._loaded[name] = handle
        self.loads += 1
        while len(self._loaded) > self.max_adapters:
            old, h = self._loaded.popitem(last=False)
            if self._active == old:
                self._set(None)
            llama_cpp.llama_adapter_lora_free(h)
            self._models = {k: v for k, v in self._models.items() if v.adapter != old}
            self.evictions += 1

    def _activate(self, name: str, path: Path) -> None:
        self._ensure(name, path)
        self._set(name)

    def _set(self, name: str | None) -> None:
        if name == self._active:
            return
        llama_cpp = require_llama_cpp()
        ctx = self.base.model.llama._ctx.ctx
        if name is None:
            rc = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._loaded[name])
            rc = llama_cpp.llama_set_adapters_lora(ctx, arr, 1, (ctypes.c_float * 1)(1.0))
        if rc != 0:
            raise EngineUnavailable(f"llama.cpp could not set adapter {name} (rc={rc})")
        self._active = name


class LlamaCppEngine(Engine):
    name = "llama.cpp"

    def __init__(self) -> None:
        require_llama_cpp()
        convert_dir()

    def shares_base(self, info: ModelInfo) -> bool:
        return peft_adapters.shares_base(info) and not peft_adapters.adapter_config(
            info.path).get("use_dora")

    def load(self, info: ModelInfo, settings: Settings,
             progress: Progress | None = None) -> LoadedModel:
        if info.format == "peft":  # DoRA, prompt tuning: no llama.cpp form
            return load_causal_lm(info, settings, progress)
        from transformers import AutoConfig, AutoTokenizer

        from afinar.models.loader import quiet_transformers

        quiet_transformers()
        t0 = time.perf_counter()
        folder, _ = hf_folder(info, settings, progress)
        gguf = base_gguf(folder, settings, progress)
        tok = AutoTokenizer.from_pretrained(str(folder))
        probe = LoadedModel(info, None, tok, "cpu", 0, "")
        probe.model = type("M", (), {"config": AutoConfig.from_pretrained(str(folder))})
        model = LlamaCppModel(gguf, folder, settings, n_ctx=probe.context_length)
        info = ModelInfo(**{**info.__dict__, "info": {**info.info, "hf_folder": str(folder)}})
        return LoadedModel(info, model, tok, "cpu", time.perf_counter() - t0, "llama.cpp",
                           lock=threading.Lock())

    def adapter_host(self, base: LoadedModel, max_adapters: int,
                     settings: Settings) -> LlamaAdapterHost:
        return LlamaAdapterHost(base, max_adapters, settings)


__all__ = ["EngineUnavailable", "LlamaCppEngine", "LlamaCppModel", "base_gguf", "lora_gguf"]
