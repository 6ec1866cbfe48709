"""Embeddings with a catalog embedding model (sentence-transformers), batched and normalised."""

from __future__ import annotations

import threading
from dataclasses import dataclass
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

    @property
    def dimensions(self) -> int:
        dim = getattr(self.model, "get_embedding_dimension", None)
        dim = dim or self.model.get_sentence_embedding_dimension
        return int(dim())

    def encode(self, texts: list[str], batch_size: int = 32, progress=None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text; ``progress(n_done)`` after each batch."""
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            out[i:i + batch_size] = self.model.encode(
                texts[i:i + batch_size], batch_size=batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False)
            if progress:
                progress(min(i + batch_size, len(texts)))
        return out


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
