"""``ModelCache``: the models in memory, loaded through the configured engine (the CLI, server and
eval runner share one each).

The top floor of ``models/``: it chooses the engine (``Settings.engine``, from
``engines.ENGINES``) and keeps what the engines load; nothing below imports it.
"""

from __future__ import annotations

import threading
from typing import Any

from afinar.models.adapters import LRU
from afinar.models.catalog import Catalog, ModelInfo
from afinar.models.engines import Engine, get_engine
from afinar.models.loader import LoadedModel, Progress
from afinar.settings import Settings, get_settings


class ModelCache:
    """Keeps the most recently used models in memory.

    ``max_models`` bounds the separate models (bases, full fine-tunes, prompt-tuned models); a
    LoRA/DoRA fine-tune is loaded as an adapter on its base's shared weights, at most
    ``max_adapters`` per base (default: ``Settings.max_adapters``), least recently used evicted.
    """

    def __init__(self, max_models: int = 2, max_adapters: int | None = None):
        self.max_models, self.max_adapters = max_models, max_adapters
        # (engine, id, path) -> model; a base dropped takes its adapter host along
        self._models: LRU[tuple[str, str, str], LoadedModel] = LRU(
            max_models, lambda key, _lm: self._hosts.pop(key, None))
        self._hosts: dict[tuple[str, str, str], Any] = {}  # (engine, base id, path) -> host
        self._lock = threading.Lock()

    def get(self, model_id: str, progress: Progress | None = None,
            settings: Settings | None = None) -> LoadedModel:
        settings = settings or get_settings()
        engine = get_engine(settings.engine)
        catalog = Catalog(settings)
        info = catalog.get(model_id)
        with self._lock:
            if not engine.shares_base(info):
                return self._get(engine, info, settings, progress)
            base_info = catalog.get(info.base_model)
            base = self._get(engine, base_info, settings, progress)
            key = (engine.name, base_info.id, str(base_info.path))
            host = self._hosts.get(key)
            if host is None or host.base is not base:
                host = self._hosts[key] = engine.adapter_host(
                    base, self.max_adapters or settings.max_adapters, settings)
        return host.get(info)  # under the base's lock, not the cache's

    def adapters(self, base_id: str) -> Any:
        """The adapter host of a loaded base (None when no adapter was asked for on it)."""
        return next((h for (_, bid, _), h in self._hosts.items() if bid == base_id), None)

    def _get(self, engine: Engine, info: ModelInfo, settings: Settings,
             progress: Progress | None) -> LoadedModel:
        return self._models.get((engine.name, info.id, str(info.path)),
                                lambda: engine.load(info, settings, progress))

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
            self._hosts.clear()


__all__ = ["ModelCache"]
