"""``afinar models add`` the other way round from ``export``: models made elsewhere, served like
afinar's own, with the template contract checked on the way in.

- An Ollama model: its models folder (``blobs/`` + ``manifests/``, e.g. ``~/.ollama/models``;
  ``--ollama-model NAME[:TAG]`` picks one when it holds several) or a ``Modelfile`` whose
  ``FROM`` names a GGUF file. The GGUF is registered (hard-linked, else symlinked, under
  ``AFINAR_HOME/models/imported/NAME``: never copied); Ollama's ``PARAMETER`` sampling becomes
  the model's recommended sampling; its ``TEMPLATE`` is rendered (``gotemplate``) on the sample
  conversations and compared with the GGUF's own chat template, which is what afinar serves
  with: a difference, or a TEMPLATE this cannot read, is a warning naming it. Ollama adapter
  layers (LoRA GGUFs) are refused.
- A PEFT LoRA/DoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``, as TRL,
  Axolotl or Unsloth save it) on a base in the catalog (``--base ID``, else the one its
  ``base_model_name_or_path`` names). Refused, with the reason, when its tokenizer's chat
  template, end-of-turn tokens or vocabulary differ from the base's (served on that base it
  would see another format, or never stop), or when PEFT cannot load it on the base. Accepted,
  it is copied under ``AFINAR_HOME/models/imported/NAME`` with an ``afinar-manifest.json``
  (the base's template fingerprint, traits: adapter, shares its base, mergeable, objective
  ``sft``) and served, exported and verified as afinar's own fine-tunes are.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from afinar.errors import InvalidRequest
from afinar.models.catalog import Catalog, ModelInfo
from afinar.models.export.ollama import parse_modelfile, template_renders_as
from afinar.models.finetuned import MANIFEST
from afinar.settings import Settings, get_settings

OLLAMA_HOST, OLLAMA_NAMESPACE = "registry.ollama.ai", "library"
_MEDIA = "application/vnd.ollama.image."
# Ollama's PARAMETER names -> the Hugging Face generation settings afinar reads
_SAMPLING = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
             "repeat_penalty": "repetition_penalty"}
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_TOKENIZER_KEEP = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model",
                   "added_tokens.json", "README.md")


def add_model(name: str, path: str | Path, kind: str | None = None, base: str | None = None,
              ollama_model: str | None = None, settings: Settings | None = None
              ) -> tuple[ModelInfo, list[str]]:
    """Register what ``path`` holds under ``name``; returns the model and the warnings."""
    settings = settings or get_settings()
    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidRequest(f"{p}: no such file or folder", param="path")
    if p.is_dir() and (p / "adapter_config.json").is_file():
        _only(ollama_model=ollama_model)
        return add_adapter(name, p, base, settings)
    _only(base=base)
    if p.is_dir() and (p / "manifests").is_dir() and (p / "blobs").is_dir():
        return add_ollama(name, p, ollama_model, settings)
    if p.is_file() and "manifests" in p.parts and _is_ollama_manifest(p):
        root = Path(*p.parts[:p.parts.index("manifests")])
        return add_ollama(name, root, _ref_of(root, p), settings)
    modelfile = p / "Modelfile" if p.is_dir() and not (p / "config.json").is_file() else p
    if modelfile.is_file() and (modelfile.name == "Modelfile"
                                or modelfile.suffix.lower() == ".modelfile"):
        _only(ollama_model=ollama_model)
        return add_modelfile(name, modelfile, settings)
    _only(ollama_model=ollama_model)
    return Catalog(settings).add(name, p, kind), []


def _only(**given) -> None:
    for opt, value in given.items():
        if value is not None:
            flag = "--" + opt.replace("_", "-")
            raise InvalidRequest(f"{flag} applies to "
                                 + ("an Ollama models folder" if opt == "ollama_model" else
                                    "a PEFT adapter folder (adapter_config.json)"),
                                 param=opt)


# --- Ollama --------------------------------------------------------------------------------

def _is_ollama_manifest(f: Path) -> bool:
    try:
        return isinstance(json.loads(f.read_text()).get("layers"), list)
    except (OSError, ValueError, AttributeError):
        return False


def _ref_of(root: Path, manifest: Path) -> str:
    """The name ``ollama list`` shows for a manifest file (host/namespace/model/tag)."""
    host, ns, model, tag = (list(manifest.relative_to(root / "manifests").parts) + [""] * 4)[:4]
    name = f"{model}:{tag}"
    if ns != OLLAMA_NAMESPACE or host != OLLAMA_HOST:
        name = f"{ns}/{name}" if host == OLLAMA_HOST else f"{host}/{ns}/{name}"
    return name


def ollama_models(root: Path) -> dict[str, Path]:
    """Model name (as ``ollama list`` shows it) -> manifest file, in an Ollama models folder."""
    found = {}
    for f in sorted((root / "manifests").rglob("*")):
        if f.is_file() and len(f.relative_to(root / "manifests").parts) == 4 \
                and _is_ollama_manifest(f):
            found[_ref_of(root, f)] = f
    return found


def _blob(root: Path, digest: str) -> Path:
    for name in (digest.replace(":", "-"), digest):
        if (root / "blobs" / name).is_file():
            return root / "blobs" / name
    raise InvalidRequest(f"{root}: the blob {digest} its manifest names is missing", param="path")


def add_ollama(name: str, root: Path, ref: str | None, settings: Settings
               ) -> tuple[ModelInfo, list[str]]:
    models = ollama_models(root)
    if not models:
        raise InvalidRequest(f"{root}: an Ollama models folder with no model manifests",
                             param="path")
    if ref is None:
        if len(models) > 1:
            raise InvalidRequest(f"{root} holds {len(models)} Ollama models "
                                 f"({', '.join(models)}): pick one with --ollama-model",
                                 param="ollama_model")
        ref = next(iter(models))
    key = ref if ref in models else f"{ref}:latest"
    if key not in models:
        raise InvalidRequest(f"no Ollama model {ref!r} in {root}; it holds "
                             f"{', '.join(models)}", param="ollama_model")
    layers: dict[str, Path] = {}
    for layer in json.loads(models[key].read_text())["layers"]:
        kind = str(layer.get("mediaType", "")).removeprefix(_MEDIA)
        layers.setdefault(kind, _blob(root, layer["digest"]))
    if "adapter" in layers:
        raise InvalidRequest(f"Ollama model {key} has an ADAPTER layer (a LoRA GGUF on its "
                             "base): afinar imports adapters as PEFT folders; add the base "
                             "GGUF and the adapter's PEFT folder instead", param="path")
    if "projector" in layers:
        raise InvalidRequest(f"Ollama model {key} has a vision projector: afinar serves "
                             "text models only", param="path")
    if "model" not in layers:
        raise InvalidRequest(f"Ollama model {key} has no model (GGUF) layer", param="path")
    params = json.loads(layers["params"].read_text()) if "params" in layers else {}
    text = {k: layers[k].read_text() if k in layers else None for k in ("template", "system")}
    dest = settings.models_dir / "imported" / name
    if dest.exists():
        raise InvalidRequest(f"{dest} exists: remove it or choose another name", param="name")
    dest.mkdir(parents=True)
    gguf = dest / "model.gguf"
    try:
        os.link(layers["model"], gguf)
    except OSError:  # another file system
        gguf.symlink_to(layers["model"].resolve())
    try:
        return _register_gguf(name, gguf, text["template"], text["system"],
                              {k: v if isinstance(v, list) else [v] for k, v in params.items()},
                              {"imported_from": "ollama", "ollama_model": key,
                               "ollama_folder": str(root)}, settings)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def add_modelfile(name: str, modelfile: Path, settings: Settings
                  ) -> tuple[ModelInfo, list[str]]:
    text = modelfile.read_text()
    if re.search(r"^ADAPTER[ \t]", text, re.M):
        raise InvalidRequest(f"{modelfile} has an ADAPTER line: afinar imports adapters as "
                             "PEFT folders; add the base GGUF and the adapter folder instead",
                             param="path")
    mf = parse_modelfile(text)
    src = mf.get("from")
    if not src:
        raise InvalidRequest(f"{modelfile} has no FROM line", param="path")
    gguf = (modelfile.parent / Path(src).expanduser()).resolve()
    if not src.lower().endswith(".gguf") or not gguf.is_file():
        raise InvalidRequest(f"{modelfile}: FROM {src} is not a GGUF file beside it (a model "
                             "name is pulled by Ollama: add its models folder, e.g. "
                             "~/.ollama/models, with --ollama-model NAME)", param="path")
    return _register_gguf(name, gguf, mf.get("template"), mf.get("system"), mf["parameters"],
                          {"imported_from": "modelfile", "modelfile": str(modelfile.resolve())},
                          settings)


def _register_gguf(name: str, gguf: Path, template: str | None, system: str | None,
                   params: dict[str, list], info: dict, settings: Settings
                   ) -> tuple[ModelInfo, list[str]]:
    from afinar.models.loader import load_tokenizer
    from afinar.models.templates import template_fingerprint

    sampling = {}
    for k, hf_name in _SAMPLING.items():
        if params.get(k):
            try:
                sampling[hf_name] = float(params[k][-1])
            except (TypeError, ValueError):
                raise InvalidRequest(f"PARAMETER {k} {params[k][-1]!r} is not a number",
                                     param="path") from None
    catalog = Catalog(settings)
    m = catalog.add(name, gguf, "chat", info={
        **info, **({"sampling": sampling} if sampling else {}),
        **({"ollama_system": system} if system else {}),
        **({"ollama_stop": params["stop"]} if params.get("stop") else {})})
    try:
        tok = load_tokenizer(m, settings)
    except Exception as e:
        catalog.remove(name)
        raise InvalidRequest(f"{gguf}: transformers cannot read this GGUF's tokenizer ({e})",
                             param="path") from e
    warnings = []
    if not getattr(tok, "chat_template", None):
        warnings.append("the GGUF has no chat template: afinar cannot render chats for it the "
                        "way Ollama's TEMPLATE does")
    elif template is None:
        warnings.append("no Ollama TEMPLATE to check: afinar serves it with the GGUF's chat "
                        "template")
    else:
        check = template_renders_as(template, system, tok)
        if not check.ok and check.detail.startswith("sample conversation"):
            warnings.append(f"Ollama's TEMPLATE differs from the GGUF's chat template, which "
                            f"afinar serves with ({check.detail})")
        elif not check.ok:  # beyond the Go-template subset (tools, functions): not checked
            warnings.append(f"Ollama's TEMPLATE is not checked against the GGUF's chat "
                            f"template, which afinar serves with ({check.detail})")
    if tok is not None and getattr(tok, "chat_template", None):
        stops = set(template_fingerprint(tok)["stop_tokens"])
        extra = [s for s in params.get("stop", []) if s not in stops]
        if extra:
            warnings.append(f"Ollama also stops on {extra}, which are not end-of-turn tokens "
                            "for afinar (pass them as stop strings)")
    if system:
        warnings.append("Ollama's SYSTEM message is not applied by afinar: pass it with "
                        "--system or a system message (kept in the model's info)")
    return m, warnings


# --- PEFT adapters -------------------------------------------------------------------------

def _find_base(cfg: dict, folder: Path, catalog: Catalog) -> ModelInfo:
    want = str(cfg.get("base_model_name_or_path") or "")
    if not want:
        raise InvalidRequest(f"{folder}/adapter_config.json names no base model: name it "
                             "with --base ID", param="base")
    wanted_path = Path(want).expanduser()
    short = want.rstrip("/").split("/")[-1].lower()
    for m in catalog.list("chat"):
        if m.format == "peft":
            continue
        if m.id in (want, short) or (wanted_path.exists() and m.path.exists()
                                     and m.path.resolve() == wanted_path.resolve()):
            return m
    raise InvalidRequest(f"the adapter's base {want!r} is not in the catalog: add it with "
                         "`afinar models add` and name it with --base ID", param="base")


def _fingerprint(tok, gc) -> dict:
    from afinar.models.templates import template_fingerprint

    return template_fingerprint(tok, gc)


def _trained_with(folder: Path) -> str | None:
    readme = folder / "README.md"
    text = readme.read_text(errors="replace").lower() if readme.is_file() else ""
    return next((t for t in ("unsloth", "axolotl", "trl") if t in text), None)


def add_adapter(name: str, folder: Path, base: str | None, settings: Settings
                ) -> tuple[ModelInfo, list[str]]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from afinar.models.loader import hf_folder, quiet_transformers

    quiet_transformers()
    catalog = Catalog(settings)
    catalog.check_new_id(name)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    if cfg.get("peft_type") != "LORA":
        raise InvalidRequest(f"{folder} is a {cfg.get('peft_type')} adapter: afinar imports "
                             "LoRA and DoRA adapters", param="path")
    weights = next((folder / w for w in ADAPTER_WEIGHTS if (folder / w).is_file()), None)
    if weights is None:
        raise InvalidRequest(f"{folder} has no {ADAPTER_WEIGHTS[0]}", param="path")
    base_info = catalog.get(base) if base else _find_base(cfg, folder, catalog)
    if base_info.kind != "chat" or base_info.format == "peft":
        raise InvalidRequest(f"{base_info.id} is not a base chat model", param="base")
    base_folder = Path(hf_folder(base_info, settings)[0])
    base_tok = AutoTokenizer.from_pretrained(str(base_folder))
    try:
        gc = GenerationConfig.from_pretrained(str(base_folder))
    except OSError:
        gc = None
    want = _fingerprint(base_tok, gc)
    warnings = []
    if (folder / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(folder))
        if len(tok) != len(base_tok):
            raise InvalidRequest(f"the adapter's tokenizer has {len(tok)} tokens, "
                                 f"{base_info.id}'s {len(base_tok)}: it was trained with added "
                                 "tokens its base does not have", param="path")
        have = _fingerprint(tok, gc)
        if not getattr(tok, "chat_template", None):
            warnings.append("the adapter's tokenizer has no chat template: taken to be "
                            f"trained with {base_info.id}'s")
        else:
            diff = [k for k in ("template_sha256", "eos_token", "stop_token_ids")
                    if have.get(k) != want.get(k)]
            if diff:
                raise InvalidRequest(
                    f"the adapter was trained with another chat template or end-of-turn "
                    f"tokens than {base_info.id}'s ({', '.join(diff)} differ): served on it, "
                    "it would see another format or never stop", code="template_mismatch",
                    param="path")
    else:
        warnings.append(f"the adapter carries no tokenizer: taken to be trained with "
                        f"{base_info.id}'s chat template")
    try:
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(
            str(base_folder), dtype=torch.float32), str(folder))
    except Exception as e:  # PEFT's and torch's own errors say what does not fit
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidRequest(f"PEFT cannot load the adapter on {base_info.id}: {first[:300]}",
                             param="path") from e
    dest = settings.models_dir / "imported" / name
    if dest.exists():
        raise InvalidRequest(f"{dest} exists: remove it or choose another name", param="name")
    dest.mkdir(parents=True)
    try:
        for f in (folder / "adapter_config.json", weights,
                  *(folder / k for k in _TOKENIZER_KEEP)):
            if f.is_file():
                shutil.copy2(f, dest / f.name)
        method = "dora" if cfg.get("use_dora") else "lora"
        trained_with = _trained_with(folder)
        (dest / MANIFEST).write_text(json.dumps({
            "base_model": base_info.id, "method": method, "method_config": {"type": method},
            "template_fingerprint": want, "imported_from": str(folder.resolve()),
            "trained_with": trained_with,
            "traits": {"artifact": "adapter", "shares_base": True, "mergeable": True,
                       "objective": "sft", "data_kind": "sft"}}, indent=1))
        m = catalog.add_finetune(name, dest, base_info, info={
            "imported_from": str(folder.resolve()), "peft_type": cfg["peft_type"],
            **({"trained_with": trained_with} if trained_with else {})})
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return m, warnings


__all__ = ["add_adapter", "add_model", "add_modelfile", "add_ollama", "ollama_models"]
