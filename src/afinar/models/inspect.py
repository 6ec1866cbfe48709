"""Look at a model on disk without loading its weights: format, kind, parameters, context length.

Handles the three layouts afinar accepts: a GGUF file, a Hugging Face folder (``config.json`` +
safetensors) and a sentence-transformers folder (``modules.json``). Results are cached by
(path, size, mtime) because reading a GGUF header costs a second or two.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from afinar.errors import InvalidRequest


@dataclass
class ModelFacts:
    format: str  # gguf | hf | sentence-transformers
    kind: str  # chat | embedding
    parameters: int | None
    context_length: int | None
    size_bytes: int
    architecture: str | None = None
    has_chat_template: bool | None = None


def source_key(path: str | os.PathLike) -> str:
    """A short key that changes when the file (or any file of the folder) changes."""
    p = Path(path).resolve()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    h = hashlib.sha256(str(p).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(p) if f != p else ''}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:20]


def disk_size(path: str | os.PathLike) -> int:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _safetensors_params(folder: Path) -> int | None:
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                n = 1
                for d in st.get_slice(name).get_shape():
                    n *= d
                total += n
    return total


def _inspect_gguf(path: Path) -> ModelFacts:
    from gguf import GGUFReader

    try:
        r = GGUFReader(str(path))
    except Exception as e:  # the gguf reader raises plain ValueError/struct errors
        raise InvalidRequest(f"{path}: not a readable GGUF file ({e})", param="path") from e
    arch = r.fields["general.architecture"].contents()
    ctx_field = r.fields.get(f"{arch}.context_length")
    return ModelFacts(
        format="gguf",
        kind="chat",
        parameters=sum(int(t.n_elements) for t in r.tensors),
        context_length=int(ctx_field.contents()) if ctx_field is not None else None,
        size_bytes=path.stat().st_size,
        architecture=arch,
        has_chat_template="tokenizer.chat_template" in r.fields,
    )


def _inspect_folder(path: Path) -> ModelFacts:
    if (path / "modules.json").is_file() or (path / "config_sentence_transformers.json").is_file():
        ctx = None
        sbert = path / "sentence_bert_config.json"
        if sbert.is_file():
            ctx = json.loads(sbert.read_text()).get("max_seq_length")
        params = _safetensors_params(path)
        cfg = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        return ModelFacts(
            format="sentence-transformers",
            kind="embedding",
            parameters=params,
            context_length=ctx or cfg.get("max_position_embeddings"),
            size_bytes=disk_size(path),
            architecture=(cfg.get("architectures") or [None])[0],
        )
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise InvalidRequest(
            f"{path}: not a model folder (no config.json or modules.json)", param="path"
        )
    cfg = json.loads(cfg_file.read_text())
    arch = (cfg.get("architectures") or [None])[0]
    text_cfg = cfg.get("text_config", cfg)
    template = (path / "chat_template.jinja").is_file()
    tok_cfg = path / "tokenizer_config.json"
    if not template and tok_cfg.is_file():
        template = bool(json.loads(tok_cfg.read_text()).get("chat_template"))
    kind = "chat" if arch is None or arch.endswith("ForCausalLM") else "embedding"
    return ModelFacts(
        format="hf",
        kind=kind,
        parameters=_safetensors_params(path),
        context_length=text_cfg.get("max_position_embeddings"),
        size_bytes=disk_size(path),
        architecture=arch,
        has_chat_template=template,
    )


def inspect_path(path: str | os.PathLike, cache_file: Path | None = None) -> ModelFacts:
    """Facts about the model at ``path``; raises InvalidRequest naming the path if it is not one."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidRequest(f"{p}: no such file or folder", param="path")
    key = source_key(p)
    cache: dict = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text())
        except ValueError:
            cache = {}
        if key in cache:
            return ModelFacts(**cache[key])
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise InvalidRequest(f"{p}: a model file must be .gguf", param="path")
        facts = _inspect_gguf(p)
    else:
        facts = _inspect_folder(p)
    if cache_file is not None:
        from afinar.store.atomic import atomic_write_text

        cache[key] = asdict(facts)
        atomic_write_text(cache_file, json.dumps(cache, indent=1))
    return facts
