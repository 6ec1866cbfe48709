"""A key's groups and admin flag change after creation (issue 15's keys page; the API's
``POST /v1/keys/{id}``, ``afinar keys update``): the change holds from the key's next request on,
for bearer requests and studio sessions alike; members cannot change keys, admins cannot change
owner keys or another project's keys."""

from fastapi.testclient import TestClient

from afinar.cli import main
from afinar.server.app import create_app
from afinar.store.keys import ApiKeys
from tests.unit.test_studio import signed_in


def bearer(k: str) -> dict:
    return {"Authorization": f"Bearer {k}"}


def test_groups_change_at_once_over_the_api_and_in_a_session(home):
    _, admin = ApiKeys().create("boss", admin=True)
    ann, ann_key = ApiKeys().create("ann", groups="support")
    owner, _ = ApiKeys().create("root", owner=True)
    other, _ = ApiKeys().create("zed", project="elsewhere")
    app = create_app()
    app.state.spawn_workers = False
    with TestClient(app) as http:
        session = signed_in(app, ann_key)  # a studio session opened before the change
        assert session.get("/v1/keys/me").json()["groups"] == ["support"]
        r = http.post(f"/v1/keys/{ann.id}", headers=bearer(ann_key), json={"groups": "x"})
        assert r.status_code == 403  # a member changes no key, not even its own
        r = http.post(f"/v1/keys/{ann.id}", headers=bearer(admin),
                      json={"groups": ["billing"]})
        assert r.status_code == 200 and r.json()["groups"] == ["billing"]
        assert http.get("/v1/keys/me", headers=bearer(ann_key)).json()["groups"] == ["billing"]
        assert session.get("/v1/keys/me").json()["groups"] == ["billing"]
        r = http.post(f"/v1/keys/{ann.id}", headers=bearer(admin), json={"admin": True})
        assert r.json()["admin"] is True and r.json()["groups"] == ["billing"]
        assert http.get("/v1/keys", headers=bearer(ann_key)).status_code == 200  # admin now
        r = http.post(f"/v1/keys/{owner.id}", headers=bearer(admin), json={"admin": False})
        assert r.status_code == 403
        r = http.post(f"/v1/keys/{other.id}", headers=bearer(admin), json={"groups": "a"})
        assert r.status_code == 404  # another project's key does not exist for this admin
        r = http.post(f"/v1/keys/{ann.id}", headers=bearer(admin), json={"groups": ["a,b"]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "groups"
        r = http.post(f"/v1/keys/{ann.id}", headers=bearer(admin), json={"name": "new"})
        assert r.status_code == 400  # only groups and admin change
        assert ApiKeys().get(ann.id).groups == ["billing"]  # nothing refused was stored


def test_studio_keys_page_edits_a_row(home):
    _, admin = ApiKeys().create("boss", admin=True)
    ann, ann_key = ApiKeys().create("ann", groups="support")
    app = create_app()
    app.state.spawn_workers = False
    with TestClient(app):
        c = signed_in(app, admin)
        page = c.get("/keys").text
        assert f'action="/keys/{ann.id}/update"' in page
        csrf = c.headers["X-CSRF-Token"]
        r = c.post(f"/keys/{ann.id}/update", data={"groups": "support, billing"},
                   headers={"X-CSRF-Token": ""}, follow_redirects=False)
        assert r.status_code == 403 and ApiKeys().get(ann.id).groups == ["support"]  # no CSRF
        r = c.post(f"/keys/{ann.id}/update", data={"groups": "support, billing", "csrf": csrf},
                   follow_redirects=False)
        assert r.status_code == 303
        assert ApiKeys().get(ann.id).groups == ["billing", "support"]
        assert not ApiKeys().get(ann.id).admin
        member = signed_in(app, ann_key)
        assert member.post(f"/keys/{ann.id}/update", data={
            "groups": "", "admin": "on", "csrf": member.headers["X-CSRF-Token"]}
        ).status_code == 403
        assert not ApiKeys().get(ann.id).admin


def test_keys_update_cli(home, capsys):
    rec, _ = ApiKeys().create("ann", groups="support")
    try:
        main(["keys", "update", rec.id, "--groups", "a, b", "--admin"])
    except SystemExit as e:
        assert e.code == 0
    assert "groups: a,b admin" in capsys.readouterr().out
    assert ApiKeys().get(rec.id).groups == ["a", "b"] and ApiKeys().get(rec.id).admin
    for argv, needle in ((["keys", "update", rec.id], "nothing to change"),
                         (["keys", "update", "key_nope", "--groups", "x"], "no API key")):
        try:
            main(argv)
        except SystemExit as e:
            assert e.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and "Traceback" not in err
