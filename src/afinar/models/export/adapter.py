"""``--format adapter``: a fine-tune's PEFT folder as plain PEFT (and vLLM's LoRA loader) read it:
``adapter_config.json`` naming the base folder, ``adapter_model.safetensors`` holding only the
adapter tensors (re-written with PEFT's own metadata, nothing afinar-specific), the tokenizer and
chat template beside it; afinar's manifests sit beside, not inside."""

from __future__ import annotations

import json
from pathlib import Path

from afinar.errors import InvalidRequest
from afinar.models.export.formats import EXPORTERS, Check, Exporter
from afinar.models.export.source import SAMPLES, Source, copy_tokenizer, write_export_manifest
from afinar.models.export.verify import logits_close, sample_ids

ADAPTER_WEIGHTS = "adapter_model.safetensors"


@EXPORTERS.register()
class AdapterExporter(Exporter):
    name = "adapter"
    help = "the PEFT adapter folder (peft, vLLM's LoRA loader)"
    needs_hf = False

    def export(self, src: Source, out: Path, quant: str, work: Path) -> None:
        from safetensors.torch import load_file, save_file

        if not src.is_adapter:
            raise InvalidRequest(f"{src.model_id} is not an adapter fine-tune (it has full "
                                 "weights): export it with --format merged or gguf",
                                 param="format")
        cfg = json.loads((src.info.path / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = str(src.base_folder)
        (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
        tensors = load_file(str(src.info.path / ADAPTER_WEIGHTS))
        save_file(tensors, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        copy_tokenizer(src, out)
        write_export_manifest(out, src, self.name, base_folder=str(src.base_folder))

    def checks(self, path: Path, src: Source, data: dict, hf: Path | None) -> list[Check]:
        return [check_adapter(path, src)]


def check_adapter(path: Path, src: Source) -> Check:
    """Plain ``peft.PeftModel.from_pretrained`` loads the folder on the base and gives the
    fine-tune's logits; the weights file holds PEFT's entries only."""
    import torch
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    with safe_open(str(path / ADAPTER_WEIGHTS), "pt") as f:
        keys, meta = list(f.keys()), f.metadata() or {}
    odd = [k for k in keys if "lora_" not in k and "modules_to_save" not in k
           and "prompt_embeddings" not in k]
    if odd or set(meta) - {"format"}:
        return Check("adapter", False, f"{ADAPTER_WEIGHTS} holds non-PEFT entries: "
                     f"{(odd or sorted(meta))[:3]}")
    ids = torch.tensor([sample_ids(src.tokenizer(), SAMPLES[-1])])
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(
        str(src.base_folder), dtype=torch.float32), str(path)).eval()
    ours = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(
        str(src.base_folder), dtype=torch.float32), str(src.info.path)).eval()
    with torch.no_grad():
        return logits_close(plain(ids).logits, ours(ids).logits, "adapter loads with plain PEFT")
