"""Many fine-tuned models on one base: LoRA/DoRA adapters loaded by name into one PEFT model that
wraps the shared base weights, at most ``max_adapters`` of them (least recently used evicted).

``LRU`` is the one least-recently-used store of ``models/``: ``AdapterLRU`` (the base of every
engine's adapter host: PEFT's ``AdapterHost`` here, llama.cpp's runtime adapters), llama.cpp's
merged models and ``ModelCache``'s separate models all keep their entries in one.

Every generation on a base runs under that base's lock (``LoadedModel.lock``), and
``LoadedModel.activate()`` is called inside the lock before the model runs: it selects the
request's adapter (loading it again if it was evicted meanwhile) or, for the base id itself,
disables the adapter layers. So no request ever runs with another request's adapter.

Prompt-tuned models are not hosted here: their virtual tokens live on a ``PeftModel`` of their own
(prepended by its forward, not injected into the base layers), and PEFT cannot mix prompt-learning
and LoRA adapters in one model; they keep the path of ``loader.load_finetuned``.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from afinar.models.catalog import ModelInfo
from afinar.models.finetuned import check_fingerprint, read_manifest, traits
from afinar.models.loader import LoadedModel

SHARED_PEFT_TYPES = ("LORA",)  # DoRA is LORA with use_dora
_UNKNOWN = "\0unknown"  # the layers' state after PEFT changed it by itself
K = TypeVar("K")
V = TypeVar("V")


def adapter_config(path: Path) -> dict:
    f = path / "adapter_config.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def shares_base(info: ModelInfo) -> bool:
    """Whether this fine-tuned model is an adapter that can be hosted on its shared base: its
    traits say so (``finetuned.traits``) and its folder holds a PEFT adapter that injects into
    the base layers."""
    return (info.format == "peft" and bool(info.base_model)
            and traits(read_manifest(info.path)).shares_base
            and adapter_config(info.path).get("peft_type") in SHARED_PEFT_TYPES)


def adapter_name(info: ModelInfo) -> str:
    # PEFT names become module-dict keys: no ':' or '.' allowed, so a digest of id and folder.
    return "a" + hashlib.sha256(f"{info.id}\0{info.path}".encode()).hexdigest()[:16]


class LRU(Generic[K, V]):
    """At most ``capacity`` entries, least recently used first: the one LRU of ``models/``
    (adapters on a base, merged llama.cpp models, the cache's separate models).

    ``get(key, load)`` returns the entry (a use: it becomes the most recent) or calls ``load()``
    to make it; entries over ``capacity`` are then dropped, oldest first, each handed to
    ``evict(key, value)``. ``loads`` counts the entries made, ``evictions`` those dropped. Not
    locked: its owner holds its own lock (the base's, the host's, the cache's) around every call.
    A capacity of 0 keeps nothing (a value is made, returned and dropped at once).
    """

    def __init__(self, capacity: int, evict: Callable[[K, V], None] | None = None):
        if capacity < 0:
            raise ValueError("an LRU's capacity cannot be negative")
        self.capacity, self._evict = capacity, evict
        self._items: OrderedDict[K, V] = OrderedDict()
        self.loads = 0
        self.evictions = 0

    def get(self, key: K, load: Callable[[], V]) -> V:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._items[key] = load()
        self.loads += 1
        while len(self._items) > self.capacity:
            old, dropped = self._items.popitem(last=False)
            if self._evict is not None:
                self._evict(old, dropped)
            self.evictions += 1
        return value

    def peek(self, key: K) -> V:
        """The entry for ``key`` without counting a use (``KeyError`` when absent)."""
        return self._items[key]

    def keys(self) -> list[K]:
        """Keys, least recently used first."""
        return list(self._items)

    def values(self) -> list[V]:
        return list(self._items.values())

    def clear(self) -> None:
        """Forget every entry (no ``evict`` calls: the owner drops what they hold)."""
        self._items.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)


class AdapterLRU:
    """Adapters loaded on one base model, in an ``LRU`` of ``max_adapters``; all changes run
    under the base lock. Subclasses say how an adapter is loaded, freed and selected (PEFT here,
    llama.cpp in ``engines/llamacpp.py``); selecting ``None`` runs the bare base."""

    def __init__(self, base: LoadedModel, max_adapters: int):
        if max_adapters < 1:
            raise ValueError("max_adapters must be at least 1")
        self.base, self.max_adapters = base, max_adapters
        self._loaded: LRU[str, Any] = LRU(max_adapters, self._evicted)  # name -> handle
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._active: str | None = None  # the adapter the layers run now (None: base)
        base.activate_hook = lambda: self._select(None)

    @property
    def loaded(self) -> list[str]:
        """Adapter names in memory, least recently used first."""
        return self._loaded.keys()

    @property
    def loads(self) -> int:
        """Adapters read from disk (first loads and reloads after eviction)."""
        return self._loaded.loads

    @property
    def evictions(self) -> int:
        return self._loaded.evictions

    def get(self, info: ModelInfo) -> LoadedModel:
        key = (info.id, str(info.path))
        with self.base.lock:
            if key in self._models:
                lm = self._models[key]
                self._ensure(lm.adapter, info.path)  # counts as a use (LRU)
                return lm
            t0 = time.perf_counter()
            check_fingerprint(read_manifest(info.path), self.base.tokenizer,
                              self.base.model.generation_config, info.id)
            name = adapter_name(info)
            self._ensure(name, info.path)
            lm = LoadedModel(info, self.base.model, self.base.tokenizer, self.base.device,
                             time.perf_counter() - t0, "adapter", lock=self.base.lock,
                             activate_hook=lambda: self._activate(name, info.path), adapter=name,
                             batcher=self.base.batcher)
            self._models[key] = lm
            return lm

    def _ensure(self, name: str, path: Path) -> None:
        self._loaded.get(name, lambda: self._load(name, path))

    def _evicted(self, name: str, handle: Any) -> None:
        self._unload(name, handle)
        self._models = {k: v for k, v in self._models.items() if v.adapter != name}

    def _activate(self, name: str, path: Path) -> None:
        self._ensure(name, path)
        self._select(name)

    def _load(self, name: str, path: Path) -> Any:
        raise NotImplementedError

    def _unload(self, name: str, handle: Any) -> None:
        raise NotImplementedError

    def _select(self, name: str | None) -> None:
        raise NotImplementedError


class AdapterHost(AdapterLRU):
    """PEFT adapters injected into the shared base's layers."""

    def __init__(self, base: LoadedModel, max_adapters: int):
        super().__init__(base, max_adapters)
        self.peft = None  # the PeftModel wrapping base.model, made with the first adapter

    def _load(self, name: str, path: Path) -> Path:
        if self.peft is None:
            from peft import PeftModel

            self.peft = PeftModel.from_pretrained(self.base.model, str(path), adapter_name=name,
                                                  is_trainable=False)
            self._active = name  # PEFT activates (and enables) the first adapter
        else:
            self.peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
        self.peft.eval()
        return path

    def _unload(self, name: str, handle: Path) -> None:
        with warnings.catch_warnings():  # "adapter X was active ...": we set it anew
            warnings.simplefilter("ignore", UserWarning)
            self.peft.delete_adapter(name)
        self._active = _UNKNOWN  # PEFT picks another active adapter: set it anew next time

    def _select(self, name: str | None) -> None:
        if self.peft is None or self._active == name:
            return
        tuner = self.peft.base_model
        if name is None:
            tuner.disable_adapter_layers()
        else:
            tuner.enable_adapter_layers()
            tuner.set_adapter(name, inference_mode=True)
        self._active = name
