"""The reference engine: transformers ``generate`` on fp32 (CPU) weights, adapters through PEFT."""

from __future__ import annotations

from afinar.models import adapters
from afinar.models.catalog import ModelInfo
from afinar.models.engines.base import ENGINES, Engine
from afinar.models.loader import LoadedModel, Progress, load_causal_lm
from afinar.settings import Settings


@ENGINES.register("transformers")
class TransformersEngine(Engine):
    name = "transformers"

    def load(self, info: ModelInfo, settings: Settings,
             progress: Progress | None = None) -> LoadedModel:
        return load_causal_lm(info, settings, progress)

    def shares_base(self, info: ModelInfo) -> bool:
        return adapters.shares_base(info)

    def adapter_host(self, base: LoadedModel, max_adapters: int,
                     settings: Settings) -> adapters.AdapterHost:
        return adapters.AdapterHost(base, max_adapters)
