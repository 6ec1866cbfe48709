"""``afinar.models`` on floors without circles, read from the code (every import, including those
inside functions, which is where circles hide):

1. basic pieces (catalog, inspect, templates, the fine-tune contract, the loader, sampling,
   constrained JSON, the batch scheduler, generation, tool-call parsing, GGUF conversion): they import no engine, no
   cache and no adapter host;
2. ``adapters``: the one LRU and the PEFT adapter host;
3. ``engines``: the basic pieces and ``adapters`` only, never the cache;
4. ``cache`` (``ModelCache``, which chooses the engine) and ``export``;
5. the package facade ``afinar.models``, which no module of the package imports.

A module not named below is taken for a basic piece."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_import_graph import _modules as package_modules
from tests.unit.test_import_graph import import_edges

BASIC = ("catalog", "inspect", "templates", "finetuned", "loader", "sampling", "constrained",
         "batching", "generation", "toolcalls", "gguf")
FLOORS = {"adapters": 2, "engines": 3, "cache": 4, "export": 4}
FACADE = "afinar.models"


def _modules() -> dict[str, Path]:
    return {m: p for m, p in package_modules().items() if m == FACADE
            or m.startswith(FACADE + ".")}


def _edges() -> dict[str, dict[str, int]]:
    """models module -> {models module it imports: first line}, from the package's one import
    reader (``test_import_graph.import_edges``: ``from pkg import sub`` names the submodule,
    ``from pkg import name`` the package's ``__init__``)."""
    mods, edges = _modules(), import_edges()
    return {m: {t: line for t, line in edges.get(m, {}).items() if t in mods} for m in mods}


def floor(module: str) -> int:
    if module == FACADE:
        return 5
    top = module.split(".")[2]
    return FLOORS.get(top, 1)


def test_the_named_pieces_exist():
    mods = _modules()
    for name in (*BASIC, *FLOORS):
        assert f"{FACADE}.{name}" in mods, f"{name} is named in the floors but not in models/"


def test_the_parser_sees_function_local_and_package_imports():
    """The check reads what it claims to: an import inside a function and a name taken from a
    package both count (the engines package registers its engines by importing them)."""
    edges = _edges()
    assert "afinar.models.engines.llamacpp" in edges["afinar.models.engines"]
    assert "afinar.models.engines" in edges["afinar.models.cache"]
    # export/verify.py imports the llama.cpp engine inside a function
    assert any(t.startswith("afinar.models.engines") for t in edges["afinar.models.export.verify"])


def test_no_import_circles_in_models():
    edges = _edges()
    state: dict[str, int] = {}  # 1: on the current path (the DFS stack), 2: done
    circles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in edges[m]:
            if state.get(t) == 1:  # back to a module on the path: a circle
                circles.append([*path[path.index(t):], t])
            elif t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    described = [" -> ".join(f"{a} (line {edges[a][b]})" for a, b in zip(c, c[1:])) + f" -> {c[-1]}"
                 for c in circles]
    assert not circles, "import circles in models/:\n" + "\n".join(described)


def test_every_import_goes_down_the_floors():
    bad = []
    for m, targets in _edges().items():
        for t, line in targets.items():
            if floor(t) > floor(m) or (floor(t) == floor(m) and floor(m) > 1
                                       and t.split(".")[2] != m.split(".")[2]):
                bad.append(f"{m}:{line} imports {t} (floor {floor(m)} -> {floor(t)})")
    assert not bad, "imports up or sideways in models/:\n" + "\n".join(sorted(bad))


def test_basic_pieces_import_neither_engines_nor_the_cache():
    edges = _edges()
    for name in BASIC:
        m = f"{FACADE}.{name}"
        up = [t for t in edges[m] if t.split(".")[2:3] in (["engines"], ["cache"], ["adapters"])
              or t == FACADE]
        assert not up, f"{m} imports {up}: a basic piece must not know engines or the cache"


def test_engines_import_only_basic_pieces_and_the_adapter_lru():
    edges = _edges()
    allowed = {f"{FACADE}.{n}" for n in BASIC} | {f"{FACADE}.adapters"}
    for m in edges:
        if m.startswith(f"{FACADE}.engines"):
            other = [t for t in edges[m] if t not in allowed and
                     not t.startswith(f"{FACADE}.engines")]
            assert not other, f"{m} imports {other}"
