"""Projects, as OpenAI has them: every key belongs to one; files, vector stores, fine-tuning
jobs and their models belong to the project of the key that made them; to another project's
keys, admins included, they do not exist (404) on every endpoint family; an owner key acts in
all. Old databases move into the ``default`` project."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from afinar.models import Catalog
from afinar.server.app import create_app
from afinar.store.keys import ApiKeys
from afinar.tuning import run_worker
from tests.helpers import run_cli
from tests.unit.test_access_rules import Api, chat_rows

TEXT = "# Beta plans\n\nThe beta launch code is 55501, kept by the beta team.\n"


@pytest.fixture
def two(home, tiny_model_template):
    Catalog().add("tiny", tiny_model_template)
    k = ApiKeys()
    secrets = {"a_admin": k.create("alpha admin", admin=True, project="alpha")[1],
               "a": k.create("alpha user", project="alpha")[1],
               "b_admin": k.create("beta admin", admin=True, project="beta")[1],
               "b": k.create("beta user", project="beta")[1],
               "owner": k.create("root", owner=True)[1]}
    app = create_app()
    app.state.spawn_workers = False
    with TestClient(app) as http:
        yield {n: Api(http, s) for n, s in secrets.items()}


def test_another_projects_objects_do_not_exist(two):
    b, a, a_admin = two["b"], two["a"], two["a_admin"]
    fid = b.upload("plans.md", TEXT)
    store = b.store(name="beta kb", file_ids=[fid])
    train = b.upload("train.jsonl", chat_rows(12), "fine-tune")
    r = b.post("/fine_tuning/jobs", json={"model": "tiny", "training_file": train,
                                          "suffix": "beta",
                                          "hyperparameters": {"n_epochs": 1, "batch_size": 4}})
    assert r.status_code == 200, r.text
    job = r.json()["id"]
    assert run_worker(exit_when_idle=True, log=lambda m: None) == 1
    ft = b.get(f"/fine_tuning/jobs/{job}").json()["fine_tuned_model"]
    assert ft and b.get(f"/models/{ft}").status_code == 200
    tool = {"type": "file_search", "vector_store_ids": [store]}
    for key in (a, a_admin):  # an admin of another project too
        assert not key.reads(fid) and not key.reads(train)
        assert key.delete(f"/files/{fid}").status_code == 404
        assert store not in {s["id"] for s in key.get("/vector_stores").json()["data"]}
        for r in (key.get(f"/vector_stores/{store}"),
                  key.post(f"/vector_stores/{store}", json={"name": "x"}),
                  key.post(f"/vector_stores/{store}/search", json={"query": "launch code"}),
                  key.get(f"/vector_stores/{store}/files"),
                  key.get(f"/vector_stores/{store}/files/{fid}"),
                  key.get(f"/vector_stores/{store}/files/{fid}/content"),
                  key.post(f"/vector_stores/{store}/files", json={"file_id": fid}),
                  key.post(f"/vector_stores/{store}/file_batches", json={"file_ids": [fid]}),
                  key.delete(f"/vector_stores/{store}/files/{fid}"),
                  key.delete(f"/vector_stores/{store}"),
                  key.post("/vector_stores", json={"file_ids": [fid]}),
                  key.post("/chat/completions", json={
                      "model": "tiny", "tools": [tool],
                      "messages": [{"role": "user", "content": "launch code?"}]}),
                  key.post("/responses", json={"model": "tiny", "input": "launch code?",
                                               "tools": [tool]}),
                  key.get(f"/fine_tuning/jobs/{job}"),
                  key.get(f"/fine_tuning/jobs/{job}/events"),
                  key.get(f"/fine_tuning/jobs/{job}/checkpoints"),
                  key.post(f"/fine_tuning/jobs/{job}/cancel"),
                  key.post("/fine_tuning/jobs", json={"model": "tiny", "training_file": train}),
                  key.get(f"/models/{ft}"),
                  key.post("/chat/completions", json={
                      "model": ft, "max_tokens": 2,
                      "messages": [{"role": "user", "content": "hi"}]}),
                  key.post("/responses", json={"model": ft, "input": "hi"})):
            assert r.status_code == 404, (r.request.method, r.request.url, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"
        assert job not in {j["id"] for j in key.get("/fine_tuning/jobs").json()["data"]}
        models = {m["id"] for m in key.get("/models").json()["data"]}
        assert ft not in models and "tiny" in models  # registered models: every project's
    assert a_admin.delete(f"/models/{ft}").status_code == 404
    # the project's own keys and the owner see all of it
    for key in (b, two["b_admin"], two["owner"]):
        assert key.reads(fid) and key.get(f"/vector_stores/{store}").status_code == 200
        assert "55501" in " ".join(h["content"][0]["text"] for h in key.post(
            f"/vector_stores/{store}/search", json={"query": "launch code"}).json()["data"])
        assert ft in {m["id"] for m in key.get("/models").json()["data"]}
    # objects of project alpha stay alpha's
    mine = a.upload("a.md", "# A\n\nAlpha text.\n")
    assert not b.reads(mine) and not two["b_admin"].reads(mine) and two["owner"].reads(mine)


def test_admins_manage_their_projects_keys_and_the_owner_all(two):
    a_admin, owner = two["a_admin"], two["owner"]
    me = two["b"].get("/keys/me").json()
    assert me["project"] == "beta" and me["admin"] is False and me["owner"] is False
    listed = {k["name"]: k for k in a_admin.get("/keys").json()["data"]}
    assert set(listed) == {"alpha admin", "alpha user"}
    beta_ids = {k["name"]: k["id"] for k in owner.get("/keys").json()["data"]}
    assert {"beta admin", "beta user", "root"} <= set(beta_ids)
    assert a_admin.delete(f"/keys/{beta_ids['beta user']}").status_code == 404
    r = a_admin.post("/keys", json={"name": "sneak", "project": "beta"})
    assert r.status_code == 403
    assert a_admin.post("/keys", json={"name": "up", "owner": True}).status_code == 403
    r = a_admin.post("/keys", json={"name": "alpha two"})
    assert r.status_code == 200 and r.json()["project"] == "alpha"
    r = owner.post("/keys", json={"name": "gamma", "project": "gamma", "admin": True})
    assert r.status_code == 200 and r.json()["project"] == "gamma"
    assert owner.delete(f"/keys/{beta_ids['beta user']}").status_code == 200


def test_projects_cli_and_keys_in_projects(home, capsys):
    code, out, _ = run_cli(capsys, "projects", "create", "research")
    assert code == 0 and "research" in out
    code, _, err = run_cli(capsys, "projects", "create", "research")
    assert code == 2 and "exists" in err
    code, _, err = run_cli(capsys, "projects", "create", "Bad Name")
    assert code == 2 and "invalid project name" in err
    code, out, _ = run_cli(capsys, "keys", "create", "--name", "r1", "--project", "research",
                           "--groups", "hr")
    assert code == 0 and "project: research" in out
    code, out, _ = run_cli(capsys, "keys", "create", "--name", "boss", "--owner")
    assert code == 0 and "owner" in out.splitlines()[0]
    code, out, _ = run_cli(capsys, "projects", "list", "--json")
    import json

    rows = {p["id"]: p["keys"] for p in json.loads(out)}
    assert rows == {"default": 1, "research": 1}
    code, out, _ = run_cli(capsys, "keys", "list", "--json")
    by_name = {k["name"]: k for k in json.loads(out)}
    assert by_name["r1"]["project"] == "research" and by_name["boss"]["owner"] is True
    assert by_name["boss"]["admin"] is True


def test_an_old_database_moves_into_the_default_project(home):
    """Rows made before projects (schema 5) are the default project's, keys included."""
    import hashlib

    from sqlalchemy import create_engine

    from afinar.settings import get_settings
    from afinar.store.db import reset_databases
    from afinar.store.migrations import MIGRATIONS

    engine = create_engine(get_settings().db_url)
    secret = "sk-afinar-old-admin"
    with engine.begin() as conn:
        for _, _, step in MIGRATIONS[:5]:
            step(conn)
        conn.exec_driver_sql(
            "INSERT INTO api_keys (id, name, prefix, sha256, created_at, groups, admin) VALUES "
            f"('key_old', 'old', 'sk-afinar-old', '{hashlib.sha256(secret.encode()).hexdigest()}'"
            ", 1, '[\"hr\"]', 1)")
        conn.exec_driver_sql(
            "INSERT INTO files (id, purpose, filename, bytes, sha256, status, created_at, info, "
            "owner_key_id, owner_groups) VALUES ('file-old', 'assistants', 'a.txt', 1, 'ab', "
            "'processed', 1, '{}', 'key_old', '[\"hr\"]')")
    engine.dispose()
    reset_databases()
    rec = ApiKeys().verify(secret)
    assert rec.project_id == "default" and rec.admin is True and rec.owner is False
    from afinar.store.access import file_readers
    from afinar.store.files import Files

    old = Files().get("file-old")
    assert old.project_id == "default" and old.groups is None
    assert file_readers(old) == ["@key_old", "hr"]
    from afinar.store.keys import Projects

    assert [p.id for p, _ in Projects().list()] == ["default"]
