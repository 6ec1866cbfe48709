"""Model aliases: a stable name clients send as ``model`` (``afinar models alias NAME MODEL``),
standing for one catalog model at a time, and the history of its moves.

``Catalog.get`` follows an alias on every call (one primary-key read), so every path that
resolves a model id (the server's chat completions, completions, responses and embeddings, the
CLI's chat, ask and eval, fine-tuning jobs) uses the alias's current target, and a move is
followed by the next request: nothing caches the alias itself (the model cache is keyed by the
target's id and path). An alias is as visible as its target: a key that may read the target model
may use the alias (``afinar.store.access.model_project`` follows it); to others it does not exist.

Names share the model ids' space: an alias cannot take a model's id (nor a model an alias's
name), and it never names another alias. A model an alias stands for cannot be removed until the
alias moves or goes. Every change is a row of the history (``model_alias_history``): set, move,
delete, and promotions (``promote``: moved by ``afinar promote``; ``refuse``: evaluated and not
moved), each with who, when, from, to and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from afinar.errors import Conflict, InvalidRequest, NotFound
from afinar.models.catalog import _ID, BUILTINS, Catalog, ModelInfo
from afinar.settings import Settings, get_settings
from afinar.store.tables import AliasEvent, AliasRecord, ModelRecord

ACTIONS = ("set", "move", "delete", "promote", "refuse")
MAX_REASON = 4000


class AliasNotFound(NotFound):
    code = "alias_not_found"


@dataclass
class Alias:
    name: str
    model: str  # the catalog id it stands for now
    created_at: float
    updated_at: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class HistoryEntry:
    alias: str
    created_at: float
    action: str
    actor: str
    from_model: str | None
    to_model: str | None
    reason: str | None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"alias": self.alias, "created_at": self.created_at, "action": self.action,
                "actor": self.actor, "from": self.from_model, "to": self.to_model,
                "reason": self.reason, "info": self.info}


def local_actor() -> str:
    """Who acts from this machine's command line: ``user@host (command line)``."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (command line)"


def _alias(r: AliasRecord) -> Alias:
    return Alias(r.name, r.model, r.created_at, r.updated_at, dict(r.info or {}))


class Aliases:
    """The aliases of one database."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.catalog = Catalog(self.settings)
        self.db = self.catalog.db

    # -- reads -----------------------------------------------------------------------------
    def list(self) -> list[Alias]:
        with self.db.session() as s:
            return [_alias(r) for r in s.scalars(select(AliasRecord).order_by(AliasRecord.name))]

    def find(self, name: str) -> Alias | None:
        with self.db.session() as s:
            rec = s.get(AliasRecord, name)
            return _alias(rec) if rec is not None else None

    def get(self, name: str) -> Alias:
        a = self.find(name)
        if a is None:
            known = [x.name for x in self.list()]
            raise AliasNotFound(f"no alias {name!r}; known: {', '.join(known) or 'none'} (set "
                                "one with `afinar models alias NAME MODEL`)", param="alias")
        return a

    def target(self, name: str) -> ModelInfo:
        """The model the alias stands for now (its catalog entry)."""
        return self.catalog.get(self.get(name).model)

    def history(self, name: str) -> list[HistoryEntry]:
        """Every change of ``name``, oldest first (kept after the alias is deleted)."""
        with self.db.session() as s:
            rows = list(s.scalars(select(AliasEvent).where(AliasEvent.alias == name)
                                  .order_by(AliasEvent.seq)))
        return [HistoryEntry(r.alias, r.created_at, r.action, r.actor, r.from_model,
                             r.to_model, r.reason, dict(r.info or {})) for r in rows]

    # -- changes ---------------------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not _ID.match(name) or name.startswith("ft:"):
            raise InvalidRequest(f"invalid alias name {name!r}: use letters, digits, '.', '_' "
                                 "or '-' (at most 128), not starting with 'ft:'", param="alias")
        if any(b.id == name for b in BUILTINS):
            raise Conflict(f"{name!r} is a built-in model id: an alias needs a name of its own",
                           param="alias")
        with self.db.session() as s:
            if s.get(ModelRecord, name) is not None:
                raise Conflict(f"{name!r} is a model id: an alias needs a name of its own",
                               param="alias")

    def _check_target(self, model: str) -> ModelInfo:
        if self.find(model) is not None:
            raise InvalidRequest(f"{model!r} is an alias: an alias names a model, not another "
                                 "alias", param="model")
        return self.catalog.get(model)  # unknown -> NotFound naming the known ids

    def set(self, name: str, model: str, *, actor: str | None = None,
            reason: str | None = None, action: str | None = None,
            info: dict[str, Any] | None = None, expect: str | None = None) -> Alias:
        """Point ``name`` at ``model`` (creating the alias, or moving it); one history row.
        ``expect``: move only if the alias still stands for that model (a promotion decided
        against it), else ``Conflict``."""
        self._check_name(name)
        target = self._check_target(model)
        reason, actor = _reason(reason), actor or local_actor()
        now = time.time()
        with self.db.session() as s:
            rec = s.get(AliasRecord, name)
            before = rec.model if rec is not None else None
            if expect is not None and before != expect:
                raise Conflict(f"alias {name!r} moved to {before!r} while {expect!r} was being "
                               "compared with the candidate: nothing was changed", param="alias")
            if rec is None:
                rec = AliasRecord(name=name, model=target.id, created_at=now, updated_at=now,
                                  info={})
                s.add(rec)
            else:
                rec.model, rec.updated_at = target.id, now
            act = action or ("set" if before is None else "move")
            s.add(AliasEvent(alias=name, created_at=now, action=act, actor=actor[:256],
                             from_model=before, to_model=target.id, reason=reason,
                             info=dict(info or {})))
        return self.get(name)

    def delete(self, name: str, *, actor: str | None = None, reason: str | None = None
               ) -> Alias:
        reason, actor = _reason(reason), actor or local_actor()
        with self.db.session() as s:
            rec = s.get(AliasRecord, name)
            if rec is None:
                raise AliasNotFound(f"no alias {name!r}", param="alias")
            gone = _alias(rec)
            s.delete(rec)
            s.add(AliasEvent(alias=name, created_at=time.time(), action="delete",
                             actor=actor[:256], from_model=gone.model, to_model=None,
                             reason=reason, info={}))
        return gone

    def record(self, name: str, action: str, *, actor: str, from_model: str | None,
               to_model: str | None, reason: str | None, info: dict[str, Any] | None = None
               ) -> None:
        """A history row that moves nothing (a promotion refused)."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
        self.get(name)
        with self.db.session() as s:
            s.add(AliasEvent(alias=name, created_at=time.time(), action=action,
                             actor=actor[:256], from_model=from_model, to_model=to_model,
                             reason=_reason(reason), info=dict(info or {})))

    def update_info(self, name: str, **values: Any) -> Alias:
        """Merge ``values`` into the alias's ``info`` (e.g. where ``afinar improve`` stopped
        reading feedback)."""
        with self.db.session() as s:
            rec = s.get(AliasRecord, name)
            if rec is None:
                raise AliasNotFound(f"no alias {name!r}", param="alias")
            rec.info = {**(rec.info or {}), **values}
        return self.get(name)


def _reason(reason: str | None) -> str | None:
    if reason is None or not reason.strip():
        return None
    if len(reason) > MAX_REASON:
        return reason[:MAX_REASON - 1] + "…"
    return reason


__all__ = ["Alias", "AliasNotFound", "Aliases", "HistoryEntry", "local_actor"]
