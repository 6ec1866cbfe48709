"""The package's shape read from the code, as an outside reviewer reads it: every import,
including those inside functions, goes down the floors of docs/architecture.md, and no module
reaches itself again through others (a circle hidden by a function-local import is a circle).

Floors, top first: cli > server > evals > tuning, rag (siblings: neither imports the other) >
graders > data > models > store > the base modules (errors, ids, settings, registry, processes).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
FLOOR = {"": 0, "errors": 0, "ids": 0, "settings": 0, "registry": 0, "processes": 0,
         "store": 1, "models": 2, "data": 3, "graders": 4, "rag": 5, "tuning": 5,
         "evals": 6, "server": 7, "cli": 8, "__main__": 9}


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "afinar").rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_edges() -> dict[str, dict[str, int]]:
    """module -> {imported afinar module: line}; ``from pkg import sub`` names the submodule."""
    mods = _modules()
    edges: dict[str, dict[str, int]] = defaultdict(dict)
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    name = ".".join(base + ([node.module] if node.module else []))
                else:
                    name = node.module or ""
                subs = [f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [name, *subs]
            for t in targets:
                if t.startswith("afinar") and t != m:
                    while t not in mods:  # afinar.x.y.attr -> the module that holds it
                        t = t.rsplit(".", 1)[0]
                    edges[m].setdefault(t, node.lineno)
    return edges


def _floor(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return top, FLOOR[top]


def test_every_top_level_module_has_a_floor():
    assert {_floor(m)[0] for m in _modules()} <= set(FLOOR)


def test_imports_only_go_down_the_floors():
    bad = []
    for m, targets in import_edges().items():
        top, floor = _floor(m)
        for t, line in targets.items():
            ttop, tfloor = _floor(t)
            if ttop != top and tfloor >= floor and not (floor == 0 and tfloor == 0):
                bad.append(f"{m}:{line} imports {t} ({top or 'afinar'} floor {floor} -> "
                           f"{ttop} floor {tfloor})")
    assert not bad, "imports that run up or sideways:\n" + "\n".join(sorted(bad))


def test_no_import_circles_among_modules():
    edges = import_edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(_modules()):
        if v not in index:
            visit(v)
    described = []
    for comp in circles:
        inside = [f"{a} -> {b} (line {line})" for a in comp
                  for b, line in edges.get(a, {}).items() if b in comp]
        described.append("; ".join(inside))
    assert not circles, "import circles:\n" + "\n".join(described)
