"""The reference engine: transformers on fp32 (CPU) weights, adapters through PEFT. Concurrent
requests on a model are decoded together by its batch scheduler (``batching.torch_scheduler``,
at most ``Settings.max_batch``); with ``max_batch`` 1, or a prompt-tuned model, one
``generate`` at a time."""

from __future__ import annotations

from afinar.models import adapters
from afinar.models.batching import torch_scheduler
from afinar.models.catalog import ModelInfo
from afinar.models.engines.base import ENGINES, Engine
from afinar.models.loader import LoadedModel, Progress, load_causal_lm
from afinar.settings import Settings


@ENGINES.register("transformers")
class TransformersEngine(Engine):
    name = "transformers"

    def load(self, info: ModelInfo, settings: Settings,
             progress: Progress | None = None) -> LoadedModel:
        lm = load_causal_lm(info, settings, progress)
        lm.batcher = torch_scheduler(lm.model, lm.device, lm.lock, settings.max_batch)
        return lm

    def shares_base(self, info: ModelInfo) -> bool:
        return adapters.shares_base(info)

    def adapter_host(self, base: LoadedModel, max_adapters: int,
                     settings: Settings) -> adapters.AdapterHost:
        return adapters.AdapterHost(base, max_adapters)
