"""Load catalog models into memory: causal LMs (with tokenizer; a fine-tune on a private copy of
its base) and embedding models. A basic piece: it knows no engine and no cache (``cache.py``
chooses the engine and keeps what is loaded).

A GGUF file is dequantised by transformers on load, which costs ~15 s for the embedded 135M
model. The first load converts it once to a safetensors folder under
``AFINAR_HOME/models/gguf-cache/<key>/`` (written atomically); later loads read that folder in a
fraction of a second. The key changes when the GGUF file changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afinar.errors import InvalidRequest
from afinar.models.catalog import Catalog, ModelInfo
from afinar.models.finetuned import MANIFEST, check_fingerprint, read_manifest, traits
from afinar.models.inspect import source_key
from afinar.settings import Settings, get_settings
from afinar.store.atomic import atomic_dir

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class LoadedModel:
    info: ModelInfo
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers tokenizer
    device: str
    load_seconds: float
    loaded_from: str  # "gguf" (converted now), "gguf-cache", "hf", "adapter"
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Models that share weights (a base and the adapters hosted on it, models/adapters.py) share
    # ``model`` and ``lock``; the hook puts the shared weights in this model's state.
    activate_hook: Callable[[], None] | None = None
    adapter: str | None = None  # its PEFT adapter name on the shared base
    # The engine's batch scheduler (``batching.Scheduler``): set, ``Generator`` decodes this
    # model's concurrent requests together; ``None``, one ``generate`` at a time under ``lock``.
    # Adapters hosted on a base share its scheduler (a batch holds one adapter at a time).
    batcher: Any = None

    def activate(self) -> None:
        """Select this model's adapter (or none, for a base) on the shared weights. Call it
        holding ``lock`` and keep holding the lock while the model runs."""
        if self.activate_hook is not None:
            self.activate_hook()

    @contextlib.contextmanager
    def use(self):
        """``with lm.use() as model:`` run ``model`` directly (forward passes, log-probs) with
        this model's weights, exclusively."""
        with self.lock:
            self.activate()
            yield self.model

    @property
    def context_length(self) -> int:
        cfg = self.model.config
        n = getattr(cfg, "max_position_embeddings", None) or self.info.context_length
        return int(n or 2048)


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def torch_setup(settings: Settings) -> str:
    import torch

    torch.set_num_threads(settings.effective_threads)
    return settings.effective_device()


def dtype_for(device: str):
    import torch

    # fp32 on CPU: bf16 matmuls are ~8x slower on this class of CPU (FIELD-NOTES, measured).
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@contextlib.contextmanager
def _gguf_progress(progress: Progress | None):
    """Route transformers' GGUF tensor loop (a bare tqdm bar on stderr) to our progress callback.

    transformers exposes no hook for it, so the module's ``tqdm`` name is swapped for the duration.
    """
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    def report(iterable, desc: str = "", **_kw):
        items = list(iterable)
        for i, item in enumerate(items, 1):
            if progress and (i % 16 == 0 or i == len(items)):
                progress(f"dequantising GGUF tensors {i}/{len(items)}")
            yield item

    original = gguf_utils.tqdm
    gguf_utils.tqdm = report
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def gguf_cache_dir(settings: Settings, gguf_path: Path) -> Path:
    return settings.models_dir / "gguf-cache" / source_key(gguf_path)


def convert_gguf(gguf_path: Path, dest: Path, progress: Progress | None = None) -> float:
    """Dequantise a GGUF through transformers and save it as a safetensors HF folder, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    if progress:
        progress(f"converting {gguf_path.name} to safetensors (once; later loads use the cache)")
    folder, name = str(gguf_path.parent), gguf_path.name
    with _gguf_progress(progress):
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # The weights are plain fp32 now, but a GGUF quantisation marker would stop save_pretrained
    # and training; drop it.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        seconds = time.perf_counter() - t0
        st = gguf_path.stat()
        (tmp / "afinar-source.json").write_text(json.dumps({
            "gguf": str(gguf_path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "convert_seconds": round(seconds, 3),
        }, indent=1))
    return seconds


def hf_folder(info: ModelInfo, settings: Settings | None = None,
              progress: Progress | None = None) -> tuple[Path, str]:
    """The Hugging Face folder holding a base model's weights (converting a GGUF once)."""
    settings = settings or get_settings()
    if info.format != "gguf":
        return info.path, "hf"
    folder = gguf_cache_dir(settings, info.path)
    if (folder / "config.json").is_file():
        return folder, "gguf-cache"
    convert_gguf(info.path, folder, progress)
    return folder, "gguf"


def load_causal_lm(
    info: ModelInfo, settings: Settings | None = None, progress: Progress | None = None
) -> LoadedModel:
    settings = settings or get_settings()
    if info.kind != "chat":
        raise InvalidRequest(f"{info.id} is an {info.kind} model, not a chat model", param="model")
    if info.format == "peft":
        return load_finetuned(info, settings, progress)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    device = torch_setup(settings)
    t0 = time.perf_counter()
    folder, loaded_from = hf_folder(info, settings, progress)
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype_for(device))
    model.to(device)
    model.eval()
    return LoadedModel(info, model, tok, device, time.perf_counter() - t0, loaded_from)


def load_finetuned(info: ModelInfo, settings: Settings, progress: Progress | None = None
                   ) -> LoadedModel:
    """A PEFT fine-tune on a private copy of its base (merged into it when its traits allow:
    no adapter layers per token). Hosting on a shared base is ``adapters.AdapterHost``'s."""
    from peft import PeftModel

    t0 = time.perf_counter()
    base = load_causal_lm(Catalog(settings).get(info.base_model), settings, progress)
    manifest = read_manifest(info.path)
    check_fingerprint(manifest, base.tokenizer, base.model.generation_config, info.id)
    model = PeftModel.from_pretrained(base.model, str(info.path))
    if traits(manifest).mergeable:
        model = model.merge_and_unload()  # this copy of the base is ours alone: merge for speed
    model.eval()
    return LoadedModel(info, model, base.tokenizer, base.device, time.perf_counter() - t0,
                       "adapter")


def export_merged(model_id: str, out: Path, settings: Settings | None = None) -> Path:
    """Write a fine-tuned model as one plain safetensors folder (base + adapter merged, with the
    tokenizer, chat template and manifest), loadable by transformers alone."""
    settings = settings or get_settings()
    info = Catalog(settings).get(model_id)
    if info.format not in ("peft", "hf") or not model_id.startswith("ft:"):
        raise InvalidRequest(f"{model_id} is not a fine-tuned model", param="model")
    manifest = read_manifest(info.path)
    kind = traits(manifest)
    if kind.artifact != "full" and not kind.mergeable:
        raise InvalidRequest(
            "a prompt-tuned model has virtual tokens, not weights to merge; use its adapter "
            "folder with peft" if kind.artifact == "prompt" else
            f"{model_id} is an adapter that does not merge into its base; use its adapter "
            "folder with peft", param="model")
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


def load_tokenizer(info: ModelInfo, settings: Settings | None = None):
    """Just the tokenizer (with its chat template): what dataset validation needs."""
    settings = settings or get_settings()
    from transformers import AutoTokenizer

    quiet_transformers()
    if info.base_model and info.format == "peft":
        return load_tokenizer(Catalog(settings).get(info.base_model), settings)
    if info.format == "gguf":
        cached = gguf_cache_dir(settings, info.path)
        if (cached / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(cached))
        with _gguf_progress(None):
            return AutoTokenizer.from_pretrained(str(info.path.parent), gguf_file=info.path.name)
    return AutoTokenizer.from_pretrained(str(info.path))


def load_embedding_model(info: ModelInfo, settings: Settings | None = None):
    """A sentence-transformers model (embeddings for RAG, few-shot selection)."""
    settings = settings or get_settings()
    if info.kind != "embedding":
        raise InvalidRequest(f"{info.id} is a {info.kind} model, not an embedding model",
                             param="model")
    from sentence_transformers import SentenceTransformer

    quiet_transformers()
    device = torch_setup(settings)
    return SentenceTransformer(str(info.path), device=device, local_files_only=True)
