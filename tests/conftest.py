from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.tiny_model import build_tiny_chat_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def tiny_model_template(tmp_path_factory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def tiny_model_dir(tiny_model_template, tmp_path) -> Path:
    """A private copy, so a test may change files without touching others."""
    return Path(shutil.copytree(tiny_model_template, tmp_path / "tiny-llama"))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh AFINAR_HOME (and database) for one test."""
    from afinar.settings import reset_settings
    from afinar.store.db import reset_databases

    h = tmp_path / "afinar-home"
    monkeypatch.setenv("AFINAR_HOME", str(h))
    monkeypatch.delenv("AFINAR_DATABASE_URL", raising=False)
    monkeypatch.setenv("AFINAR_THREADS", "2")
    reset_settings()
    reset_databases()
    yield h
    reset_settings()
    reset_databases()


@pytest.fixture
def tiny(home, tiny_model_template):
    """The tiny model registered as ``tiny`` and loaded."""
    from afinar.models import Catalog, load_causal_lm

    Catalog().add("tiny", tiny_model_template)
    return load_causal_lm(Catalog().get("tiny"))


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/ is absent (a user's clone has none)")
    return SHARED


@pytest.fixture
def tiny_long(home, tiny_model_template, tmp_path):
    """The tiny model with a 2,048-token window (rotary positions extend safely), for prompts
    that carry tool definitions or retrieved sources."""
    import json

    from afinar.models import Catalog, load_causal_lm

    folder = Path(shutil.copytree(tiny_model_template, tmp_path / "tiny-long"))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["max_position_embeddings"] = 2048
    (folder / "config.json").write_text(json.dumps(cfg))
    Catalog().add("tiny-long", folder)
    return load_causal_lm(Catalog().get("tiny-long"))
