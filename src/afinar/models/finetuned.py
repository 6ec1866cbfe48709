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


def export_merged(model_id: str, out: Path, settings: Settings | None = None) -> Path:
    """Write a fine-tuned model as one plain safetensors folder (base + adapter merged, with the
    tokenizer, chat template and manifest), loadable by transformers alone."""
    from afinar.errors import InvalidRequest
    from afinar.settings import get_settings
    from afinar.store.atomic import atomic_dir

    settings = settings or get_settings()
    info = Catalog(settings).get(model_id)
    if info.format not in ("peft", "hf") or not model_id.startswith("ft:"):
        raise InvalidRequest(f"{model_id} is not a fine-tuned model", param="model")
    manifest = read_manifest(info.path)
    if manifest.get("method") == "prompt_tuning":
        raise InvalidRequest("a prompt-tuned model has virtual tokens, not weights to merge; "
                             "use its adapter folder with peft", param="model")
    lm = load_causal_lm(info, settings)  # merged on load
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InvalidRequest(f"{out} exists and is not empty", param="out")
    with atomic_dir(out) as tmp:
        lm.model.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
        (tmp / MANIFEST).write_text(json.dumps({**manifest, "exported_from": model_id,
                                                "merged": True}, indent=1))
    return out
