"""The export formats' registry (``afinar.registry``'s one shape, entry point group
``afinar.exporters``) and what every format provides: how it writes a model and which checks its
output must pass before the export is called done.

A format registers its ``Exporter`` class where it is defined (under its ``name``)::

    @EXPORTERS.register()
    class GGUF(Exporter):
        name = "gguf"

Third-party formats come from the ``afinar.exporters`` entry point group.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from afinar.models.gguf import CONVERTED
from afinar.registry import Registry

if TYPE_CHECKING:
    from afinar.models.export.source import Source

# GGUF weight types: the first three straight from llama.cpp's converter, the others quantised
# from the f32 GGUF with llama.cpp's own quantizer (``llama_model_quantize``)
QUANTISED = {"q6_k": "Q6_K", "q5_k_m": "Q5_K_M", "q4_k_m": "Q4_K_M", "q4_0": "Q4_0"}
QUANTS = (*CONVERTED, *QUANTISED)
EXACT_QUANTS = ("f32", "f16")  # greedy outputs must equal the transformers model's


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False


class Exporter:
    """One export format. ``export`` writes ``out`` (an empty folder) from ``src``; ``checks``
    runs this format's checks on a written folder (the template contract is run for every
    format by ``verify``)."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    uses_quant: ClassVar[bool] = False  # --quant applies (GGUF weights)
    needs_hf: ClassVar[bool] = True  # its checks compare against the merged HF folder

    def export(self, src: Source, out: Path, quant: str, work: Path) -> None:
        raise NotImplementedError

    def checks(self, path: Path, src: Source, data: dict, hf: Path | None) -> list[Check]:
        raise NotImplementedError


EXPORTERS: Registry[type[Exporter]] = Registry("exporter", "afinar.exporters", param="format")


__all__ = ["CONVERTED", "EXACT_QUANTS", "EXPORTERS", "QUANTISED", "QUANTS", "Check", "Exporter"]
