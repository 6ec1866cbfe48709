"""Everything afinar writes under ``AFINAR_HOME`` is its user's only: the database (and its WAL
and shared-memory files), blobs, indexes, job folders and logs are 0600, folders 0700, even
when the process started with a permissive umask (issue 12, must-have 6)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from fastapi.testclient import TestClient

from afinar.models import Catalog
from afinar.server.app import create_app
from afinar.store.keys import ApiKeys
from afinar.tuning import run_worker


def _open_to_others(home: Path) -> list[str]:
    bad = []
    for p in [home, *home.rglob("*")]:
        if p.is_symlink():
            continue
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            bad.append(f"{oct(mode)} {p.relative_to(home.parent)}")
    return bad


def test_everything_under_home_is_private(home, tiny_model_template):
    os.umask(0o022)  # what most shells start with: files 0644, folders 0755
    Catalog().add("tiny", tiny_model_template)
    _, key = ApiKeys().create("k", "hr")
    app = create_app()
    app.state.spawn_workers = False
    auth = {"Authorization": f"Bearer {key}"}
    rows = "".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                            {"role": "assistant", "content": "Red."}]}) + "\n"
                   for i in range(12))
    with TestClient(app) as http:
        doc = http.post("/v1/files", headers=auth, data={"purpose": "assistants"},
                        files={"file": ("pay.md", b"# Pay\n\nThe pay band is 91377.\n")})
        store = http.post("/v1/vector_stores", headers=auth,
                          json={"file_ids": [doc.json()["id"]]})
        assert store.status_code == 200, store.text
        train = http.post("/v1/files", headers=auth, data={"purpose": "fine-tune"},
                          files={"file": ("train.jsonl", rows.encode())}).json()["id"]
        r = http.post("/v1/fine_tuning/jobs", headers=auth, json={
            "model": "tiny", "training_file": train,
            "hyperparameters": {"n_epochs": 1, "batch_size": 4}})
        assert r.status_code == 200, r.text
        assert run_worker(exit_when_idle=True, log=lambda m: None) == 1
        assert http.get(f"/v1/fine_tuning/jobs/{r.json()['id']}",
                        headers=auth).json()["status"] == "succeeded"
    names = {p.name for p in home.rglob("*")}
    assert {"afinar.db", "afinar.db-wal", "afinar.db-shm"} <= names  # WAL mode
    assert (home / "blobs").is_dir() and (home / "kb").is_dir()  # blobs, store indexes
    assert any(p.suffix in (".jsonl", ".log", ".csv") for p in home.rglob("*") if "job" in
               str(p)), sorted(names)  # a job folder with its metrics / log
    assert _open_to_others(home) == []


def test_an_old_world_readable_database_is_made_private(home):
    from afinar.settings import reset_settings
    from afinar.store.db import get_database, reset_databases

    os.umask(0o022)
    home.mkdir(mode=0o755)
    db = home / "afinar.db"
    db.touch(mode=0o644)
    db.chmod(0o644)
    home.chmod(0o755)
    reset_settings()
    reset_databases()
    get_database()  # an upgraded afinar opens it
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    from afinar.settings import get_settings

    get_settings()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
