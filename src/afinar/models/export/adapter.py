"""``--format adapter``: a fine-tune's PEFT folder as plain PEFT (and vLLM's LoRA loader) read it:
``adapter_config.json`` naming the base folder, ``adapter_model.safetensors`` holding only the
adapter tensors (re-written with PEFT's own metadata, nothing afinar-specific), the tokenizer and
chat template beside it; afinar's manifests sit beside, not inside."""

from __future__ import annotations

import json
from pathlib import Path

from afinar.errors import InvalidRequest
from afinar.models.export.source import Source, copy_tokenizer, write_export_manifest

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def export_adapter(src: Source, out: Path, quant: str, work: Path) -> None:
    from safetensors.torch import load_file, save_file

    if not src.is_adapter:
        raise InvalidRequest(f"{src.model_id} is not an adapter fine-tune (it has full "
                             "weights): export it with --format merged or gguf", param="format")
    cfg = json.loads((src.info.path / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(src.base_folder)
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    tensors = load_file(str(src.info.path / ADAPTER_WEIGHTS))
    save_file(tensors, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    copy_tokenizer(src, out)
    write_export_manifest(out, src, "adapter", base_folder=str(src.base_folder))
