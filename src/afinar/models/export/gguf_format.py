"""``--format gguf``: the model (a LoRA/DoRA fine-tune merged into its base first) as one GGUF
file, converted by llama.cpp's own script (``afinar.models.gguf``), with the reference tokenizer
beside it for the template check."""

from __future__ import annotations

from pathlib import Path

from afinar.models.export.source import Source, copy_tokenizer, write_export_manifest
from afinar.models.gguf import convert_hf

QUANTS = ("f32", "f16", "q8_0")
GGUF = "model.gguf"


def export_gguf(src: Source, out: Path, quant: str, work: Path, fmt: str = "gguf") -> None:
    convert_hf(src.hf_folder(work), out / GGUF, quant, src.model_id)
    copy_tokenizer(src, out)
    write_export_manifest(out, src, fmt, quant=quant, gguf=GGUF)
