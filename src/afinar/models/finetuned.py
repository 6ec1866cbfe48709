"""Fine-tuned models: a PEFT adapter (or a full model folder) plus ``afinar-manifest.json``.

Loading checks the contract that breaks most fine-tunes in other tools: the chat template and
end-of-turn tokens at serving time must be those the model was trained with (the manifest's
template fingerprint).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from afinar.errors import AfinarError
from afinar.models.catalog import Catalog, ModelInfo
from afinar.models.loader import LoadedModel, Progress, load_causal_lm
from afinar.models.templates import template_fingerprint
from afinar.settings import Settings

MANIFEST = "afinar-manifest.json"


class TemplateMismatch(AfinarError):
    code = "template_mismatch"
    http_status = 409


def read_manifest(path: Path) -> dict:
    f = path / MANIFEST
    return json.loads(f.read_text()) if f.is_file() else {}


def check_fingerprint(manifest: dict, tokenizer, generation_config, model_id: str) -> None:
    want = manifest.get("template_fingerprint")
    if not want:
        return
    have = template_fingerprint(tokenizer, generation_config)
    diff = [k for k in ("template_sha256", "eos_token", "stop_token_ids") if want.get(k) != have.get(k)]
    if diff:
        raise TemplateMismatch(
            f"{model_id} was trained with another chat template or stop tokens ({', '.join(diff)} "
            "differ): serving it with this base would produce the wrong format or never stop")


def load_finetuned(info: ModelInfo, settings: Settings, progress: Progress | None = None
                   ) -> LoadedModel:
    from peft import PeftModel

    t0 = time.perf_counter()
    base = load_causal_lm(Catalog(settings).get(info.base_model), settings, progress)
    manifest = read_manifest(info.path)
    check_fingerprint(manifest, base.tokenizer, base.model.generation_config, info.id)
    model = PeftModel.from_pretrained(base.model, str(info.path))
    if manifest.get("method") not in ("prompt_tuning",):
        model = model.merge_and_unload()  # this copy of the base is ours alone: merge for speed
    model.eval()
    return LoadedModel(info, model, base.tokenizer, base.device, time.perf_counter() - t0,
                       "adapter")
