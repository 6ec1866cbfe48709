"""Embeddings with a catalog embedding model (sentence-transformers), batched and normalised.

An ``Embedder`` is shared by every thread of a process (the server's requests, ingestion,
search). Its Hugging Face fast tokenizer is not thread-safe: each call sets the Rust
tokenizer's padding and truncation state, so a call without padding (counting tokens) running
while another thread encodes a padded batch breaks that batch ("Unable to create tensor ...
padding"). Tokenizer and forward pass therefore run under the embedder's lock, one call at a
time per model; the forward pass uses all of torch's threads anyway.

Backends (``AFINAR_EMBED_BACKEND``, a base's ``info.embed_backend``): ``torch`` (float32, the
reference), ``int8`` (torch's dynamic int8 quantisation of every ``nn.Linear``: weights int8,
activations quantised per batch; no other dependency) and ``bf16`` (the model's weights and
activations in bfloat16: fast where the CPU multiplies bfloat16 in hardware, AMX or AVX512-BF16,
and on GPUs; on other CPUs slower than ``torch``). Every backend's vectors are normalised in
float32. A knowledge base records the backend its
chunks were embedded with and ``for_base`` gives its queries the same one: vectors of two
backends differ slightly, and a query from one against chunks from the other would rank by
that difference too. sentence-transformers' ONNX backend is not offered: it needs optimum-onnx,
whose only release pins transformers < 4.58.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from afinar.errors import InvalidRequest
from afinar.models.catalog import Catalog
from afinar.models.loader import load_embedding_model
from afinar.settings import Settings, get_settings


@dataclass
class Embedder:
    model_id: str
    model: Any  # SentenceTransformer
    max_tokens: int
    path: str
    backend: str = "torch"
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def dimensions(self) -> int:
        dim = getattr(self.model, "get_embedding_dimension", None)
        dim = dim or self.model.get_sentence_embedding_dimension
        return int(dim())

    def encode(self, texts: list[str], batch_size: int = 32, progress=None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text; ``progress(n_done)`` after each batch.
        Texts are batched longest first (as sentence-transformers does within one call), so a
        batch pads to lengths near its own (README, "Embedding backends": with ingestion's
        128-chunk calls, torch ingestion of SQuAD's passages went 20.8 -> 26.9 chunks/s)."""
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for i in range(0, len(texts), batch_size):
            rows = order[i:i + batch_size]
            with self.lock:  # the tokenizer's padding state and the model: one call at a time
                out[rows] = self.model.encode(
                    [texts[j] for j in rows], batch_size=batch_size, normalize_embeddings=False,
                    convert_to_numpy=True, show_progress_bar=False)
            if progress:
                progress(min(i + batch_size, len(texts)))
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)  # float32 for all
        return out


    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text as the model sees them (special tokens included), untruncated."""
        with self.lock:
            ids = self.model.tokenizer(texts, add_special_tokens=True, padding=False,
                                       truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]


def check_backend(backend: str, param: str = "embed_backend") -> str:
    if backend not in BACKENDS:
        raise InvalidRequest(f"unknown embedding backend {backend!r}; known: "
                             f"{', '.join(BACKENDS)}", param=param)
    return backend


SPEED_FLAGS = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo; empty elsewhere): the int8 and bf16
    backends' speed depends on ``SPEED_FLAGS`` among them."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((ln for ln in f if ln.startswith("flags")), "").split())
    except OSError:
        return set()


def _vnni() -> bool:
    """Whether the CPU multiplies u8 x s8 into int32 without the int16 step (AVX512-VNNI or
    AVX-VNNI): then activations may use the full 8 bits (no saturation to fear)."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


def quantize_int8(model) -> Any:
    """The model with every ``nn.Linear`` replaced by torch's dynamic int8 Linear (in place):
    weights int8 per output channel, activations quantised per call. fbgemm's default quantises
    activations to 7 bits (``reduce_range``, against int16 saturation on CPUs without VNNI),
    which costs MiniLM's vectors about 0.03 of cosine; on a VNNI CPU the full 8 bits are used
    (cosine to the float32 vectors ~0.99 on sentences, measured by the tests)."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    class FullRangeLinear(DynamicLinear):
        def forward(self, x):
            return torch.ops.quantized.linear_dynamic(
                x, self._packed_params._packed_params, reduce_range=False).to(x.dtype)

    mapping = {torch.nn.Linear: FullRangeLinear} if _vnni() else None
    with warnings.catch_warnings():  # eager-mode quantisation's deprecation notices (torch 2.9+)
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                dtype=torch.qint8, mapping=mapping, inplace=True)


def to_bf16(model) -> Any:
    """The model with its weights (and so its activations) in bfloat16."""
    import torch

    return model.to(torch.bfloat16)


# backend -> what turns the loaded float32 model into it
PREPARE: dict[str, Callable[[Any], Any]] = {"torch": lambda m: m, "int8": quantize_int8,
                                            "bf16": to_bf16}
BACKENDS = tuple(PREPARE)


_cache: dict[str, Embedder] = {}
_lock = threading.Lock()


def get_embedder(model_id: str | None = None, settings: Settings | None = None,
                 backend: str | None = None) -> Embedder:
    """The process's shared embedder of ``model_id`` with ``backend`` (default: the setting)."""
    settings = settings or get_settings()
    model_id = model_id or settings.default_embedding_model
    backend = check_backend(backend or settings.embed_backend)
    info = Catalog(settings).get(model_id)
    key = f"{model_id}:{info.path}:{backend}"
    with _lock:
        if key not in _cache:
            st = PREPARE[backend](load_embedding_model(info, settings))
            _cache[key] = Embedder(model_id, st, int(st.max_seq_length or 256), str(info.path),
                                   backend)
        return _cache[key]


def base_backend(rec) -> str:
    """The backend a knowledge base's chunks were embedded with (bases made before backends
    existed: torch)."""
    return (rec.info or {}).get("embed_backend") or "torch"


def for_base(rec, settings: Settings | None = None) -> Embedder:
    """The embedder of a knowledge base's chunks and queries: its model with its backend."""
    backend = base_backend(rec)
    if backend not in BACKENDS:
        raise InvalidRequest(
            f"knowledge base {rec.name!r} was embedded with the {backend!r} backend, which this "
            f"afinar does not have (known: {', '.join(BACKENDS)}); its queries must use the same "
            f"backend as its chunks: re-embed it with `afinar kb reembed {rec.name} --backend "
            "torch`", param="embed_backend")
    return get_embedder(rec.embedding_model, settings, backend)
