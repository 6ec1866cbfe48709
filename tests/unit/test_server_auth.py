"""API keys and who may do what: ``afinar keys`` (the key alone on stdout's last line),
``afinar serve``'s local development mode (loopback only), the admin-only ``/v1/keys``
endpoints, the end of development mode when a key appears, and old databases upgraded."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from afinar.cli import serve_cmd
from afinar.server.app import create_app
from afinar.store.keys import ApiKeys
from tests.helpers import run_cli as run


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_cli_create_list_revoke(home, capsys):
    code, out, err = run(capsys, "keys", "create", "--name", "ci bot", "--groups", "ops, hr,ops")
    assert code == 0 and "shown once" in err
    key = out.splitlines()[-1]
    assert key.startswith("sk-afinar-") and key == key.strip() and " " not in key
    rec = ApiKeys().verify(key)
    assert rec.name == "ci bot" and rec.groups == ["hr", "ops"] and rec.admin is False
    assert key not in (home / "afinar.db").read_bytes().decode("latin-1")  # only its hash
    code, out, _ = run(capsys, "keys", "create", "root", "--admin")  # NAME works as well
    assert code == 0 and ApiKeys().verify(out.splitlines()[-1]).admin is True
    code, out, _ = run(capsys, "keys", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["ci bot"]["groups"] == ["hr", "ops"] and rows["root"]["admin"] is True
    assert key not in out and rows["ci bot"]["prefix"] == key[:14]
    code, out, _ = run(capsys, "keys", "list")
    assert "ci bot" in out and "hr,ops" in out
    code, _, err = run(capsys, "keys", "create", "--name", "x", "--groups", "a b")
    assert code == 2 and "invalid group name 'a b'" in err
    code, _, err = run(capsys, "keys", "create")
    assert code == 2 and "--name" in err
    code, out, _ = run(capsys, "keys", "revoke", rec.id)
    assert code == 0 and ApiKeys().verify(key) is None
    code, _, err = run(capsys, "keys", "revoke", rec.id)
    assert code == 2 and "no API key" in err


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
    ("example.com", False)])
def test_loopback_hosts(host, loopback):
    assert serve_cmd.is_loopback(host) is loopback


@pytest.fixture
def no_uvicorn(monkeypatch):
    """``afinar serve`` up to the point where uvicorn would start: the app it was given."""
    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port: started.update(
        app=app, host=host, port=port))
    return started


def test_serve_without_keys_is_local_development_mode_on_loopback_only(home, capsys,
                                                                        no_uvicorn):
    code, _, err = run(capsys, "serve", "--host", "0.0.0.0", "--no-worker")
    assert code == 2 and "no API key exists" in err and "afinar keys create" in err
    assert not no_uvicorn  # refused before starting
    code, _, err = run(capsys, "serve", "--no-worker", "--port", "8123")
    assert code == 0 and "local development mode" in err and "127.0.0.1" in err
    assert no_uvicorn["app"].state.auth is False and no_uvicorn["port"] == 8123
    ApiKeys().create("k")
    code, _, err = run(capsys, "serve", "--host", "0.0.0.0", "--no-worker")
    assert code == 0 and "development mode" not in err and no_uvicorn["app"].state.auth is True
    code, _, err = run(capsys, "serve", "--no-auth")
    assert code == 2  # the option is gone: keys or loopback decide


def test_key_endpoints_are_for_admins(home):
    _, admin = ApiKeys().create("root", admin=True)
    _, user = ApiKeys().create("alice", "team-a")
    with TestClient(create_app()) as http:
        me = http.get("/v1/keys/me", headers=bearer(user)).json()
        assert me["name"] == "alice" and me["groups"] == ["team-a"] and me["admin"] is False
        for method, path in (("get", "/v1/keys"), ("post", "/v1/keys"),
                             ("delete", "/v1/keys/key_x")):
            r = http.request(method, path, headers=bearer(user),
                             json={"name": "x"} if method == "post" else None)
            assert r.status_code == 403, (method, path)
            assert r.json()["error"]["type"] == "permission_error"
            assert r.json()["error"]["code"] == "permission_denied"
        r = http.post("/v1/keys", headers=bearer(admin),
                      json={"name": "bob", "groups": "team-b, team-c"})
        assert r.status_code == 200
        bob = r.json()
        assert bob["key"].startswith("sk-afinar-") and bob["groups"] == ["team-b", "team-c"]
        assert http.get("/v1/keys/me", headers=bearer(bob["key"])).json()["name"] == "bob"
        listed = http.get("/v1/keys", headers=bearer(admin)).json()["data"]
        assert {k["name"] for k in listed} == {"root", "alice", "bob"}
        assert all("key" not in k for k in listed)  # secrets are shown once, at creation
        r = http.post("/v1/keys", headers=bearer(admin), json={"name": "x", "groups": ["a,b"]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "groups"
        r = http.delete(f"/v1/keys/{bob['id']}", headers=bearer(admin))
        assert r.json() == {"id": bob["id"], "object": "api_key.deleted", "deleted": True}
        r = http.get("/v1/models", headers=bearer(bob["key"]))
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert http.delete(f"/v1/keys/{bob['id']}", headers=bearer(admin)).status_code == 404
        assert http.get("/health").status_code == 200  # the one route without a key


def test_development_mode_ends_when_a_key_is_created(home):
    with TestClient(create_app()) as http:
        assert http.app.state.auth is False
        me = http.get("/v1/keys/me").json()
        assert me["admin"] is True and me["id"] is None
        r = http.post("/v1/keys", json={"name": "first", "admin": True})
        assert r.status_code == 200
        r = http.get("/v1/files")
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        assert http.get("/v1/files", headers=bearer("sk-afinar-x")).status_code == 401
        assert http.get("/v1/files", headers=bearer("")).status_code == 401
        first = ApiKeys().list()[0]
        assert first.name == "first" and first.admin is True
        _, second = ApiKeys().create("second")
        assert http.get("/v1/files", headers=bearer(second)).status_code == 200


def test_upgraded_database_keeps_its_keys(home):
    """A key made before groups existed (schema 4) still works after the upgrade: no groups,
    not an admin."""
    import hashlib

    from sqlalchemy import create_engine

    from afinar.settings import get_settings
    from afinar.store.db import reset_databases
    from afinar.store.migrations import MIGRATIONS

    url = get_settings().db_url
    home.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    secret = "sk-afinar-old-key"
    with engine.begin() as conn:
        for _, _, step in MIGRATIONS[:4]:
            step(conn)
        conn.exec_driver_sql(
            "INSERT INTO api_keys (id, name, prefix, sha256, created_at) VALUES "
            f"('key_old', 'old', 'sk-afinar-old', '{hashlib.sha256(secret.encode()).hexdigest()}'"
            ", 1)")
        conn.exec_driver_sql(
            "INSERT INTO files (id, purpose, filename, bytes, sha256, status, created_at, info) "
            "VALUES ('file-old', 'assistants', 'a.txt', 1, 'ab', 'processed', 1, '{}')")
    engine.dispose()
    reset_databases()
    rec = ApiKeys().verify(secret)
    assert rec.id == "key_old" and rec.groups is None and rec.admin is False
    from afinar.store.files import Files

    old = Files().get("file-old")
    assert old.owner_key_id is None and old.owner_groups is None  # an admin-only file now
