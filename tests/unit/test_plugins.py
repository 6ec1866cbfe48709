"""A third-party plugin adds a tuning method and a document loader without editing afinar.

The package in ``tests/fixtures/plugin`` (a pyproject with ``afinar.methods`` and
``afinar.loaders`` entry points, two small modules) is installed with pip into a folder; afinar
run with that folder on its path finds both: the method trains a real job on the tiny model,
``tune create --help`` lists it, and ``kb add`` reads a ``.note`` file that afinar has no loader
for. Everything runs in subprocesses, so the plugin never leaks into the other tests' registries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import THREADS

PLUGIN = Path(__file__).resolve().parents[1] / "fixtures" / "plugin"
TRAIN = """
import json, sys
from afinar.models import Catalog
from afinar.settings import get_settings
from afinar.store.files import Files
from afinar.tuning import Jobs
from afinar.tuning.methods import get_method
from afinar.tuning.runner import JobRunner

Catalog().add("tiny", sys.argv[1])
rows = [{"messages": [{"role": "user", "content": f"question {i}"},
                      {"role": "assistant", "content": "Red, blue and yellow."}]}
        for i in range(16)]
open("train.jsonl", "w").write("".join(json.dumps(r) + "\\n" for r in rows))
fid = Files().create_from_path("train.jsonl", "fine-tune").id
job = Jobs().create(model="tiny", training_file=fid, method={"type": "half_lora"},
                    hyperparameters={"n_epochs": 1, "batch_size": 8}, seed=1)
status = JobRunner(Jobs().get(job.id), get_settings(), "plugin-test").run()
done = Jobs().get(job.id)
manifest = json.loads((Catalog().get(done.fine_tuned_model).path
                       / "afinar-manifest.json").read_text())
print(json.dumps({"status": status, "error": str(done.error), "manifest": manifest,
                  "r": get_method("half_lora").config.r}))
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("plugin-site")
    build = tmp_path_factory.mktemp("plugin-build")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-build-isolation", "--no-index", "--target", str(site),
                        str(PLUGIN)], capture_output=True, text=True, cwd=build)
    assert r.returncode == 0, r.stderr
    assert any(site.glob("afinar_plugin_demo-*.dist-info/entry_points.txt"))
    return site


def _env(site: Path, home: Path) -> dict[str, str]:
    env = {**os.environ, "AFINAR_HOME": str(home), "AFINAR_THREADS": THREADS,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site),
                                                      os.environ.get("PYTHONPATH")]))}
    env.pop("AFINAR_DATABASE_URL", None)
    return env


def _afinar(env, *args, cwd):
    return subprocess.run([sys.executable, "-m", "afinar", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_plugin_method_trains_a_job_and_appears_in_help(plugin_site, tmp_path,
                                                        tiny_model_template):
    env = _env(plugin_site, tmp_path / "home")
    r = subprocess.run([sys.executable, "-c", TRAIN, str(tiny_model_template)], env=env,
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["status"] == "succeeded", out["error"]
    assert out["manifest"]["method"] == "half_lora" and out["r"] == 8
    help_text = _afinar(env, "tune", "create", "--help", cwd=tmp_path).stdout
    assert "half_lora" in help_text
    # without the plugin on the path the same name is the registry's one clear error
    env.pop("PYTHONPATH")
    r = subprocess.run([sys.executable, "-c", "from afinar.tuning.methods import get_method; "
                        "get_method('half_lora')"], env=env, capture_output=True, text=True)
    assert "unknown method 'half_lora'" in r.stderr


def test_plugin_loader_reads_its_format_into_a_knowledge_base(plugin_site, tmp_path):
    env = _env(plugin_site, tmp_path / "home")
    note = tmp_path / "runbook.note"
    note.write_text("# Runbook\n\n## Restarting the frobnicator\n\n"
                    "Hold the amber button for nine seconds, then release it.\n")
    for args in (["kb", "create", "ops"], ["kb", "add", "ops", str(note)]):
        r = _afinar(env, *args, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
    r = _afinar(env, "kb", "search", "ops", "how do I restart the frobnicator?", "--json",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    hits = hits["hits"] if isinstance(hits, dict) else hits
    assert "amber button" in hits[0]["text"]
    assert "Restarting the frobnicator" in json.dumps(hits[0])


def _registries_in_source() -> set[tuple[str, str]]:
    """(module, name) of every ``NAME = Registry(...)`` in src/afinar, read with ``ast``."""
    import ast

    src = Path(__file__).resolve().parents[2] / "src"
    found = set()
    for p in (src / "afinar").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            value = getattr(node, "value", None)
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(value, ast.Call) \
                    and getattr(value.func, "id", None) == "Registry":
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                module = ".".join(p.relative_to(src).with_suffix("").parts)
                found.add((module.removesuffix(".__init__"), target.id))
    return found


def test_afinar_plugins_lists_every_registry_in_the_code():
    import importlib

    from afinar.cli.plugins_cmd import KINDS, registries

    listed = {id(r) for r in registries()}
    for module, name in _registries_in_source():
        reg = getattr(importlib.import_module(module), name)
        assert id(reg) in listed, f"{module}.{name} is not in afinar plugins' KINDS"
    assert len(listed) == len(KINDS)
    plural = {"strategy": "strategies"}
    for reg in registries():  # every kind has entries and its entry-point group
        assert reg.names(), reg.kind
        assert reg.group == f"afinar.{plural.get(reg.kind, reg.kind + 's')}", reg.group


def test_afinar_plugins_fits_80_columns(monkeypatch, capsys):
    from afinar.cli import common
    from tests.helpers import run_cli

    monkeypatch.setattr(common.console, "width", 80)
    code, out, err = run_cli(capsys, "plugins")
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "lora" in out and "afinar.methods" in out
