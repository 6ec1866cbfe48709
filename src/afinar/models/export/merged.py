"""``--format merged``: plain safetensors (a LoRA/DoRA fine-tune merged into its base in fp32),
with the tokenizer and chat template, loadable by transformers alone."""

from __future__ import annotations

import shutil
from pathlib import Path

from afinar.models.export.source import Source, copy_tokenizer, write_export_manifest


def export_merged(src: Source, out: Path, quant: str, work: Path) -> None:
    hf = src.hf_folder(work)
    for f in hf.iterdir():
        if f.is_file() and f.suffix in (".safetensors", ".json"):
            shutil.copy2(f, out / f.name)
    copy_tokenizer(src, out)
    write_export_manifest(out, src, "merged", merged=src.is_adapter)
