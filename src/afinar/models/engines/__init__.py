"""Inference engines behind one interface (``base.Engine``), chosen by ``Settings.engine``
(``AFINAR_ENGINE``, ``afinar serve --engine``) from the ``ENGINES`` registry. transformers is the
default and the reference the other engines are tested against.

Add an engine: one file here (or in a package, named under the ``afinar.engines`` entry point
group) with ``@ENGINES.register("name") class MyEngine(Engine)``; import it below for a built-in.
llama.cpp's module imports without llama-cpp-python (it imports the library when an engine is
made), so it is always registered and a missing library is one error saying what to install."""

from __future__ import annotations

from afinar.models.engines import llamacpp, transformers  # noqa: F401  (each registers itself)
from afinar.models.engines.base import ENGINES, Engine, get_engine

__all__ = ["ENGINES", "Engine", "get_engine"]
