"""Models: the catalog (built-in + registered), loading (HF folder, GGUF with a converted cache,
sentence-transformers), chat templates, and generation (streaming, stop, seed).

Floors, bottom first (no module imports one above it, nor this facade):
basic pieces (catalog, inspect, templates, finetuned, loader, sampling, constrained, generation,
toolcalls, gguf), then ``adapters`` (the one LRU and the PEFT adapter host), then ``engines``,
then ``cache`` (``ModelCache``, which chooses the engine). ``export`` sits beside the cache."""

from afinar.models.cache import ModelCache
from afinar.models.catalog import BUILTINS, Catalog, ModelInfo
from afinar.models.generation import GenerationResult, GenerationStream, Generator, SamplingParams
from afinar.models.loader import LoadedModel, load_causal_lm, load_embedding_model, load_tokenizer
from afinar.models.templates import end_of_turn_ids, render_ids, render_text, template_fingerprint

__all__ = [
    "BUILTINS",
    "Catalog",
    "GenerationResult",
    "GenerationStream",
    "Generator",
    "LoadedModel",
    "ModelCache",
    "ModelInfo",
    "SamplingParams",
    "end_of_turn_ids",
    "load_causal_lm",
    "load_embedding_model",
    "load_tokenizer",
    "render_ids",
    "render_text",
    "template_fingerprint",
]
