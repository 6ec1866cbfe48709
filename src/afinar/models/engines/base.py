"""What an inference engine provides to ``ModelCache``, and the registry of engines.

An engine turns a catalog entry into a ``LoadedModel`` whose ``model`` answers transformers'
``generate(**kwargs)`` (the subset ``GenerationStream`` uses: input ids, ``max_new_tokens``,
``eos_token_id``, ``streamer``, ``stopping_criteria``, ``logits_processor``, greedy or
temperature/top-p sampling) and carries ``config`` and ``generation_config``; so ``Generator`` and
every caller work unchanged on any engine. Adapter fine-tunes are hosted on their base's shared
weights by the engine's adapter host (``get(info) -> LoadedModel``, ``loaded``, ``loads``,
``evictions``; built on ``adapters.LRU``), selected by ``LoadedModel.activate()`` under the
base's lock.

Engines register themselves in ``ENGINES``, one file each (``@ENGINES.register("name")``); a
package adds one through the ``afinar.engines`` entry point group. An engine whose optional
dependency is missing stays registered and says so: ``unavailable_reason()`` names what to
install, and constructing it raises that as one ``EngineUnavailable``.

An engine imports only the basic pieces (loader, templates, generation, fine-tune manifest) and
``adapters``; the cache above chooses among engines, so nothing here imports it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from afinar.models.catalog import ModelInfo
from afinar.models.loader import LoadedModel, Progress
from afinar.registry import Registry
from afinar.settings import Settings


class Engine:
    name: ClassVar[str]

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this engine cannot run here (a dependency to install), or None when it can."""
        return None

    def load(self, info: ModelInfo, settings: Settings,
             progress: Progress | None = None) -> LoadedModel:
        """A model with weights of its own: a base, a full fine-tune, a prompt-tuned model."""
        raise NotImplementedError

    def shares_base(self, info: ModelInfo) -> bool:
        """Whether this fine-tuned model is served as an adapter on its base's weights."""
        raise NotImplementedError

    def adapter_host(self, base: LoadedModel, max_adapters: int, settings: Settings) -> Any:
        """The LRU of adapters on ``base`` (made once per loaded base)."""
        raise NotImplementedError


ENGINES: Registry[type[Engine]] = Registry("engine", "afinar.engines", param="engine")


def get_engine(name: str) -> Engine:
    """The engine ``name``: an unknown name is one ``InvalidRequest`` naming the registered
    engines; a missing dependency one ``EngineUnavailable`` saying what to install."""
    return ENGINES.get(name)()
