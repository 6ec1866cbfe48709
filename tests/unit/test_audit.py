"""The audit log: every write (refused ones too) and every admin read is recorded with the key,
its project, the action, the object and the status; ``afinar audit`` shows it at 80 columns
and as JSON, filtered by key."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from afinar.server.app import create_app
from afinar.store.audit import AuditLog
from afinar.store.keys import ApiKeys
from tests.helpers import run_cli
from tests.unit.test_access_rules import Api


def test_writes_and_admin_reads_are_audited(home, capsys):
    keys = ApiKeys()
    admin_rec, admin = keys.create("root", admin=True, project="ops")
    user_rec, user = keys.create("alice", "hr", project="ops")
    with TestClient(create_app()) as http:
        a, u = Api(http, admin), Api(http, user)
        fid = u.upload("notes.md", "# Notes\n\nHello.\n")
        assert u.get(f"/files/{fid}").status_code == 200  # a user's read: not audited
        assert u.get("/keys").status_code == 403  # a refused admin read: not a write either
        assert u.delete(f"/files/{fid}-nope").status_code == 404  # a refused write: audited
        assert a.get("/files").status_code == 200  # an admin's read: audited
        r = a.post("/keys", json={"name": "bob"})
        bob = r.json()["id"]
        assert u.delete(f"/files/{fid}").status_code == 200
        assert http.post("/v1/files", headers={"Authorization": "Bearer sk-afinar-x"}
                         ).status_code == 401  # no key got through: nobody to name
    rows = [(e.key_name, e.project_id, e.action, e.object_id, e.status)
            for e in reversed(AuditLog().entries(100))]
    assert rows == [
        ("alice", "ops", "POST /v1/files", fid, 200),
        ("alice", "ops", "DELETE /v1/files/{file_id}", f"{fid}-nope", 404),
        ("root", "ops", "GET /v1/files", None, 200),
        ("root", "ops", "POST /v1/keys", bob, 200),
        ("alice", "ops", "DELETE /v1/files/{file_id}", fid, 200),
    ]
    assert all(e.key_id in (admin_rec.id, user_rec.id) for e in AuditLog().entries(100))

    code, out, _ = run_cli(capsys, "audit", "--json", "--key", "alice", "--limit", "2")
    got = json.loads(out)
    assert code == 0 and [g["object"] for g in got] == [fid, f"{fid}-nope"]
    assert got[0]["key_id"] == user_rec.id and got[0]["project"] == "ops"
    assert isinstance(got[0]["time"], float) and got[0]["status"] == 200
    from afinar.cli import common

    width = common.console.width
    common.console.width = 80
    try:
        code, out, _ = run_cli(capsys, "audit")
    finally:
        common.console.width = width
    assert code == 0 and "POST /v1/keys" in out and bob in out
    assert max(len(line) for line in out.splitlines()) <= 80
    code, out, _ = run_cli(capsys, "audit", "--key", user_rec.id, "--json")
    assert len(json.loads(out)) == 3
