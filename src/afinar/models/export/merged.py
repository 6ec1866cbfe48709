"""``--format merged``: plain safetensors (a LoRA/DoRA fine-tune merged into its base in fp32),
with the tokenizer and chat template, loadable by transformers alone."""

from __future__ import annotations

import shutil
from pathlib import Path

from afinar.models.export.formats import EXPORTERS, Check, Exporter
from afinar.models.export.source import SAMPLES, Source, copy_tokenizer, write_export_manifest
from afinar.models.export.verify import logits_close, reference_model, sample_ids


@EXPORTERS.register()
class MergedExporter(Exporter):
    name = "merged"
    help = "plain safetensors, merged (transformers, vLLM, TGI)"

    def export(self, src: Source, out: Path, quant: str, work: Path) -> None:
        hf = src.hf_folder(work)
        for f in hf.iterdir():
            if f.is_file() and f.suffix in (".safetensors", ".json"):
                shutil.copy2(f, out / f.name)
        copy_tokenizer(src, out)
        write_export_manifest(out, src, self.name, merged=src.is_adapter)

    def checks(self, path: Path, src: Source, data: dict, hf: Path | None) -> list[Check]:
        """transformers alone loads the folder and gives the reference's logits."""
        import torch

        ids = torch.tensor([sample_ids(src.tokenizer(), SAMPLES[-1])])
        with torch.no_grad():
            return [logits_close(reference_model(path)(ids).logits,
                                 reference_model(hf)(ids).logits,
                                 "merged loads with transformers")]
