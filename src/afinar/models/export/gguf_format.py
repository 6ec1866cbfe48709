"""``--format gguf``: the model (a LoRA/DoRA fine-tune merged into its base first) as one GGUF
file, converted by llama.cpp's own script (``afinar.models.gguf``) in f32, f16 or q8_0, or
quantised from the f32 file by llama.cpp's quantizer (q4_k_m, q4_0, q5_k_m, q6_k); the reference
tokenizer sits beside it for the template check."""

from __future__ import annotations

from pathlib import Path

from afinar.models.export.formats import EXPORTERS, Check, Exporter
from afinar.models.export.source import Source, copy_tokenizer, write_export_manifest
from afinar.models.export.verify import check_gguf
from afinar.models.gguf import write_gguf_as

GGUF = "model.gguf"


def write_gguf(src: Source, outfile: Path, quant: str, work: Path) -> Path:
    """The model as one GGUF in ``quant`` (k-quants by way of an f32 file under ``work``)."""
    return write_gguf_as(src.hf_folder(work), outfile, quant, work / "f32.gguf",
                         src.settings.llama_threads, src.model_id)


@EXPORTERS.register()
class GGUFExporter(Exporter):
    name = "gguf"
    help = "one GGUF file (llama.cpp, LM Studio...)"
    uses_quant = True

    def export(self, src: Source, out: Path, quant: str, work: Path) -> None:
        write_gguf(src, out / GGUF, quant, work)
        copy_tokenizer(src, out)
        write_export_manifest(out, src, self.name, quant=quant, gguf=GGUF)

    def checks(self, path: Path, src: Source, data: dict, hf: Path | None) -> list[Check]:
        return check_gguf(path / data["gguf"], hf, src, data["quant"], data["template_fingerprint"])
