"""Embeddings with a catalog embedding model (sentence-transformers), batched and normalised.

An ``Embedder`` is shared by every thread of a process (the server's requests, ingestion,
search). Its Hugging Face fast tokenizer is not thread-safe: each call sets the Rust
tokenizer's padding and truncation state, so a call without padding (counting tokens) running
while another thread encodes a padded batch breaks that batch ("Unable to create tensor ...
padding"). Tokenizer and forward pass therefore run under the embedder's lock, one call at a
time per model; the forward pass uses all of torch's threads anyway.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from afinar.models.catalog import Catalog
from afinar.models.loader import load_embedding_model
from afinar.settings import Settings, get_settings


@dataclass
class Embedder:
    model_id: str
    model: Any  # SentenceTransformer
    max_tokens: int
    path: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def dimensions(self) -> int:
        dim = getattr(self.model, "get_embedding_dimension", None)
        dim = dim or self.model.get_sentence_embedding_dimension
        return int(dim())

    def encode(self, texts: list[str], batch_size: int = 32, progress=None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text; ``progress(n_done)`` after each batch."""
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            with self.lock:  # the tokenizer's padding state and the model: one call at a time
                out[i:i + batch_size] = self.model.encode(
                    texts[i:i + batch_size], batch_size=batch_size, normalize_embeddings=True,
                    convert_to_numpy=True, show_progress_bar=False)
            if progress:
                progress(min(i + batch_size, len(texts)))
        return out


    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text as the model sees them (special tokens included), untruncated."""
        with self.lock:
            ids = self.model.tokenizer(texts, add_special_tokens=True, padding=False,
                                       truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]


_cache: dict[str, Embedder] = {}
_lock = threading.Lock()


def get_embedder(model_id: str | None = None, settings: Settings | None = None) -> Embedder:
    settings = settings or get_settings()
    model_id = model_id or settings.default_embedding_model
    info = Catalog(settings).get(model_id)
    key = f"{model_id}:{info.path}"
    with _lock:
        if key not in _cache:
            st = load_embedding_model(info, settings)
            _cache[key] = Embedder(model_id, st, int(st.max_seq_length or 256), str(info.path))
        return _cache[key]
