"""``afinar plugins``: every pluggable kind, its entries and where each comes from.

Each kind is one ``afinar.registry.Registry``; third-party packages add entries through the
entry-point group shown (docs/architecture.md, "Adding a plugin"). A plugin that failed to load
is listed with its error, and the built-in entries keep working.
"""

from __future__ import annotations

import importlib

import typer
from rich.table import Table

from afinar.cli.common import console, print_json
from afinar.registry import Registry

# (kind, the module whose import registers every built-in entry, the registry's name there)
KINDS = [
    ("method", "afinar.tuning.methods", "METHODS"),
    ("objective", "afinar.tuning.objectives", "OBJECTIVES"),
    ("loader", "afinar.rag.loaders", "LOADERS"),
    ("retriever", "afinar.rag.retrievers", "RETRIEVERS"),
    ("fusion", "afinar.rag.fusion", "FUSIONS"),
    ("reranker", "afinar.rag.rerank", "RERANKERS"),
    ("layout", "afinar.rag.layouts", "LAYOUTS"),
    ("engine", "afinar.models.engines", "ENGINES"),
    ("exporter", "afinar.models.export", "EXPORTERS"),
    ("grader", "afinar.graders", "GRADERS"),
    ("metric", "afinar.evals.metrics", "METRICS"),
    ("strategy", "afinar.evals.strategies", "STRATEGIES"),
]


def registries() -> list[Registry]:
    return [getattr(importlib.import_module(module), attr) for _, module, attr in KINDS]


def _origin(entry: object) -> str:
    module = getattr(entry, "__module__", "") or ""
    return "" if module.startswith("afinar.") or module == "afinar" else module.split(".")[0]


def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List every pluggable kind (methods, loaders, engines, metrics, ...) and its entries."""
    rows = []
    for reg in registries():
        entries = [{"name": n, "plugin": _origin(e) or None} for n, e in reg.items()]
        rows.append({"kind": reg.kind, "entry_point_group": reg.group, "entries": entries,
                     "failed": reg.plugin_errors})
    if as_json:
        print_json(rows)
        return
    t = Table("kind", "entries (plugin)", "entry points")
    for r in rows:
        names = [e["name"] + (f" ({e['plugin']})" if e["plugin"] else "") for e in r["entries"]]
        names += [f"{n} FAILED: {why}" for n, why in r["failed"].items()]
        t.add_row(r["kind"], ", ".join(names), r["entry_point_group"] or "")
    console.print(t)
