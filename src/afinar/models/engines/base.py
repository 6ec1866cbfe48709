"""What an inference engine provides to ``ModelCache``.

An engine turns a catalog entry into a ``LoadedModel`` whose ``model`` answers transformers'
``generate(**kwargs)`` (the subset ``GenerationStream`` uses: input ids, ``max_new_tokens``,
``eos_token_id``, ``streamer``, ``stopping_criteria``, ``logits_processor``, greedy or
temperature/top-p sampling) and carries ``config`` and ``generation_config``; so ``Generator`` and
every caller work unchanged on any engine. Adapter fine-tunes are hosted on their base's shared
weights by the engine's adapter host (``get(info) -> LoadedModel``, ``loaded``, ``loads``,
``evictions``), selected by ``LoadedModel.activate()`` under the base's lock.
"""

from __future__ import annotations

from typing import Any, ClassVar

from afinar.models.catalog import ModelInfo
from afinar.models.loader import LoadedModel, Progress
from afinar.settings import Settings


class Engine:
    name: ClassVar[str]

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
