"""One registry shape for every pluggable kind: tuning methods, document loaders, retrievers,
fusion rules, rerankers, engines, metrics/graders, eval strategies and exporters.

A registry maps names to entries (a class or a function). Entries register themselves where they
are defined, one file each::

    METHODS = Registry("method", "afinar.methods")

    @METHODS.register("lora")
    class LoRA(Method): ...

``get(name)`` returns the entry or raises one clear ``InvalidRequest`` that names the known
entries (and the closest one); ``names()`` feeds CLI help and settings choices.

Third-party entries come from Python entry points (the same mechanism as pytest and simonw/llm's
plugins, read with ``importlib.metadata``): a package that declares

    [project.entry-points."afinar.methods"]
    my_method = "my_package.method"

is imported the first time the registry is read; importing it runs its ``@METHODS.register``
decorators. An entry point that names an object instead of a module registers that object under
the entry point's name. A plugin that fails to import is reported as one warning naming it, and
the built-in entries keep working.

This module imports nothing of afinar's but its errors, so every floor can use it.
"""

from __future__ import annotations

import difflib
import logging
import threading
import types
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from afinar.errors import InvalidRequest

T = TypeVar("T")
log = logging.getLogger("afinar.plugins")


class Registry(Generic[T]):
    """Named entries of one kind; ``kind`` is the word used in messages ("method", "loader")."""

    def __init__(self, kind: str, entry_point_group: str | None = None, *,
                 param: str | None = None, normalize: Callable[[str], str] | None = None):
        self.kind = kind
        self.group = entry_point_group
        self.param = param or kind
        self._normalize = normalize or (lambda name: name)
        self._entries: dict[str, T] = {}
        self._plugins_loaded = entry_point_group is None
        self._lock = threading.RLock()
        self.plugin_errors: dict[str, str] = {}

    # --- registering -------------------------------------------------------------------------

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a second, different entry for a name is refused."""
        key = self._normalize(name)
        with self._lock:
            old = self._entries.get(key)
            if old is not None and old is not entry and not _same_definition(old, entry):
                raise ValueError(f"{self.kind} {key!r} is already registered ({_where(old)})")
            self._entries[key] = entry
        return entry

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator: register under ``names``, or under the entry's ``name`` attribute."""

        def wrap(entry: T) -> T:
            keys = names or (getattr(entry, "name"),)
            for key in keys:
                self.add(key, entry)
            return entry

        return wrap

    # --- reading -----------------------------------------------------------------------------

    def get(self, name: str) -> T:
        """The entry for ``name``, or an ``InvalidRequest`` naming the known entries."""
        self._load_plugins()
        key = self._normalize(name) if isinstance(name, str) else name
        try:
            return self._entries[key]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def unknown(self, name: object) -> InvalidRequest:
        """The one error for a name that is not registered (also for callers that check first)."""
        known = self.names()
        hint = ""
        if isinstance(name, str):
            close = difflib.get_close_matches(self._normalize(name), known, n=1, cutoff=0.6)
            if close:
                hint = f" (did you mean {close[0]!r}?)"
        return InvalidRequest(f"unknown {self.kind} {name!r}{hint}; known: {', '.join(known)}",
                              code=f"unknown_{self.kind.replace(' ', '_')}", param=self.param)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load_plugins()
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return isinstance(name, str) and self._normalize(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"

    # --- plugins -----------------------------------------------------------------------------

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        with self._lock:
            if self._plugins_loaded:
                return
            self._plugins_loaded = True  # before importing: a plugin may read the registry
            for ep in metadata.entry_points(group=self.group):
                try:
                    obj = ep.load()
                except Exception as e:  # a broken plugin must not take the built-ins down
                    self.plugin_errors[ep.name] = f"{type(e).__name__}: {e}"
                    log.warning("afinar plugin %s (%s = %s) failed to load: %s",
                                ep.name, self.group, ep.value, e)
                    continue
                if not isinstance(obj, types.ModuleType):
                    self.add(ep.name, obj)

    def reload_plugins(self) -> None:
        """Read the entry points again (after a package was installed into this process)."""
        with self._lock:
            self._plugins_loaded = self.group is None
        self._load_plugins()


def _same_definition(a: object, b: object) -> bool:
    """True for the same class or function defined twice (a module imported under two names)."""
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == \
        (getattr(b, "__module__", 1), getattr(b, "__qualname__", 2))


def _where(entry: object) -> str:
    return f"{getattr(entry, '__module__', '?')}.{getattr(entry, '__qualname__', entry)}"
