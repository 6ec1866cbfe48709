"""What an export starts from: a catalog model (base or fine-tune) as a Hugging Face folder, its
reference tokenizer and the template fingerprint it was trained with."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from afinar.errors import AfinarError, InvalidRequest
from afinar.models.catalog import Catalog, ModelInfo
from afinar.models.finetuned import MANIFEST, read_manifest, traits
from afinar.settings import Settings

EXPORT_MANIFEST = "afinar-export.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model",
                   "added_tokens.json", "generation_config.json")

# Sample conversations every export is checked on (with and without a system message, several
# turns, non-ASCII text).
SAMPLES: list[list[dict]] = [
    [{"role": "user", "content": "hello"}],
    [{"role": "system", "content": "You answer in one line."},
     {"role": "user", "content": "Debian is"}],
    [{"role": "user", "content": "question 3"},
     {"role": "assistant", "content": "Red, blue and yellow."},
     {"role": "user", "content": "Évaluer, c'est décider. tool 7 8 9"}],
]


class ExportFailed(AfinarError):
    """An export or a verification check failed (the message says which and why)."""
    code = "export_failed"
    http_status = 422


@dataclass
class Source:
    model_id: str
    info: ModelInfo
    settings: Settings
    base_folder: Path  # the HF folder of the base (fine-tunes) or of the model itself
    manifest: dict = field(default_factory=dict)

    @property
    def is_adapter(self) -> bool:
        return self.info.format == "peft"

    @property
    def method(self) -> str | None:
        return self.manifest.get("method")

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.tokenizer_folder))

    @property
    def tokenizer_folder(self) -> Path:
        return self.info.path if (self.info.path / "tokenizer_config.json").is_file() \
            else self.base_folder

    def hf_folder(self, tmp: Path) -> Path:
        """The model's weights as one Hugging Face folder (a LoRA/DoRA fine-tune merged into its
        base in fp32 under ``tmp``; a base or full fine-tune as it is)."""
        if not self.is_adapter:
            return self.info.path if self.info.format == "hf" else self.base_folder
        if not traits(self.manifest).mergeable:
            raise InvalidRequest(f"{self.model_id} has no weights to merge into its base (a "
                                 f"{traits(self.manifest).artifact} fine-tune): export it with "
                                 "--format adapter", param="format")
        from afinar.models.gguf import merge_lora

        dest = tmp / "merged-hf"
        if not (dest / "config.json").is_file():
            dest.mkdir(parents=True, exist_ok=True)
            merge_lora(self.info.path, self.base_folder, dest)
        return dest

    def untuned_folder(self) -> Path | None:
        """The HF folder of the base model a fine-tune was trained from (None for a base)."""
        if self.is_adapter:
            return self.base_folder
        base = self.manifest.get("base_model")
        if not base or base == self.model_id:
            return None
        from afinar.models.loader import hf_folder

        return Path(hf_folder(Catalog(self.settings).get(base), self.settings)[0])

    def fingerprint(self) -> dict:
        """The template fingerprint the model was trained with (fine-tunes), else its own."""
        from transformers import GenerationConfig

        from afinar.models.templates import template_fingerprint

        if self.manifest.get("template_fingerprint"):
            return self.manifest["template_fingerprint"]
        try:
            gc = GenerationConfig.from_pretrained(str(self.base_folder))
        except OSError:
            gc = None
        return template_fingerprint(self.tokenizer(), gc)

    def system_prompt(self) -> str | None:
        """The manifest's system prompt, else the system message every conversation of the
        job's training file starts with (None when they differ or have none)."""
        if self.manifest.get("system_prompt"):
            return self.manifest["system_prompt"]
        convs = job_conversations(self, "training_file")
        firsts = {c[0]["content"] if c[0]["role"] == "system" else None for c in convs if c}
        return firsts.pop() if len(firsts) == 1 and None not in firsts else None


def resolve(model_id: str, settings: Settings) -> Source:
    from afinar.models.loader import hf_folder

    catalog = Catalog(settings)
    info = catalog.get(model_id)
    if info.kind != "chat":
        raise InvalidRequest(f"{model_id} is an {info.kind} model; only chat models export",
                             param="model")
    manifest = read_manifest(info.path) if info.path.is_dir() else {}
    if info.base_model and info.base_model != model_id:
        base_folder, _ = hf_folder(catalog.get(info.base_model), settings)
    else:
        base_folder, _ = hf_folder(info, settings)
    return Source(model_id, info, settings, Path(base_folder), manifest)


MAX_EXAMPLES = 8  # job examples the quantisation check reads


def job_conversations(src: Source, key: str, limit: int | None = None) -> list[list[dict]]:
    """The chat conversations (``messages`` rows) of the fine-tune's job file ``key``
    (``training_file``, ``validation_file``), from the blob store by the manifest's digest."""
    from afinar.store.blobs import BlobStore

    blobs = BlobStore(src.settings.blobs_dir)
    digest = (src.manifest.get("datasets") or {}).get(key)
    if not digest or not blobs.exists(digest):
        return []
    out = []
    for line in blobs.read_bytes(digest).decode("utf-8", "replace").splitlines():
        try:
            msgs = json.loads(line).get("messages") if line.strip() else None
        except (ValueError, AttributeError):
            continue
        if isinstance(msgs, list) and msgs and all(isinstance(m, dict) and "role" in m
                                                   for m in msgs):
            out.append([{"role": m["role"], "content": m.get("content") or ""} for m in msgs])
        if limit is not None and len(out) >= limit:
            break
    return out


def job_examples(src: Source, limit: int = MAX_EXAMPLES) -> tuple[list[list[dict]], str]:
    """Up to ``limit`` conversations the fine-tune's job was validated on (its validation file,
    else its training file) that end in the assistant's answer; ``what`` names the file."""
    for key, what in (("validation_file", "validation"), ("training_file", "training")):
        out = [c for c in job_conversations(src, key)
               if len(c) >= 2 and c[-1]["role"] == "assistant"][:limit]
        if out:
            return out, f"the job's {what} examples"
    return [], "no job examples"


def copy_tokenizer(src: Source, out: Path) -> None:
    """The reference tokenizer (with its chat template) saved into the export folder."""
    src.tokenizer().save_pretrained(str(out))
    gc = src.base_folder / "generation_config.json"
    if gc.is_file() and not (out / "generation_config.json").exists():
        shutil.copy2(gc, out / "generation_config.json")


def write_export_manifest(out: Path, src: Source, fmt: str, **extra) -> None:
    data = {"format": fmt, "model": src.model_id, "base_model": src.info.base_model,
            "method": src.method, "template_fingerprint": src.fingerprint(), **extra}
    (out / EXPORT_MANIFEST).write_text(json.dumps(data, indent=1))
    if src.manifest and not (out / MANIFEST).exists():
        (out / MANIFEST).write_text(json.dumps(src.manifest, indent=1, default=str))


def read_export_manifest(path: Path) -> dict:
    f = path / EXPORT_MANIFEST
    if not f.is_file():
        raise InvalidRequest(f"{path} is not an afinar export (no {EXPORT_MANIFEST})",
                             param="path")
    return json.loads(f.read_text())
