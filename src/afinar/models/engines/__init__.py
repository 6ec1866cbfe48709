"""Inference engines behind one interface (``base.Engine``), chosen by ``Settings.engine``
(``AFINAR_ENGINE``, ``afinar serve --engine``). transformers is the default and the reference the
other engines are tested against."""

from __future__ import annotations

from afinar.errors import InvalidRequest
from afinar.models.engines.base import Engine

ENGINES = ("transformers", "llama.cpp")


def get_engine(name: str) -> Engine:
    if name == "transformers":
        from afinar.models.engines.transformers import TransformersEngine

        return TransformersEngine()
    if name == "llama.cpp":
        from afinar.models.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine()
    raise InvalidRequest(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}",
                         param="engine")


__all__ = ["ENGINES", "Engine", "get_engine"]
