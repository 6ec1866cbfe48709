"""The studio's routes through FastAPI's TestClient: sign-in (session cookie, only the token's
hash kept), CSRF on every form and on the API with the cookie, sign-out, the overview and the
keys page (admins only), local development mode."""

import re

import pytest
from fastapi.testclient import TestClient

from afinar.server.app import create_app
from afinar.store.keys import ApiKeys


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def post_signin(http: TestClient, key: str, **data):
    """The sign-in form as a browser sends it: its CSRF token and cookie from GET /signin."""
    form = http.get("/signin").text
    token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    return http.post("/signin", data={"key": key, "csrf": token, **data},
                     follow_redirects=False)


def sign_in(http: TestClient, key: str) -> str:
    r = post_signin(http, key, next="/")
    assert r.status_code == 303, r.text
    return csrf_of(http.get("/").text)


def signed_in(app, key: str) -> TestClient:
    """A client signed in with ``key``, sending the session's CSRF header."""
    c = TestClient(app)
    c.headers["X-CSRF-Token"] = sign_in(c, key)
    return c


@pytest.fixture
def keys(home):
    admin, admin_secret = ApiKeys().create("boss", admin=True)
    member, member_secret = ApiKeys().create("ann", groups="support")
    return {"admin": admin_secret, "member": member_secret, "member_id": member.id}


@pytest.fixture
def http(keys):
    app = create_app()
    app.state.spawn_workers = False
    with TestClient(app) as c:
        yield c


def test_pages_need_a_session_and_a_bad_key_is_refused(http, keys):
    r = http.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin?next=/"
    assert http.get("/keys", follow_redirects=False).headers["location"] == "/signin?next=/keys"
    r = post_signin(http, "sk-wrong")
    assert r.status_code == 401 and "Incorrect API key" in r.text and "Traceback" not in r.text
    r = post_signin(http, "")
    assert r.status_code == 401 and "Paste an API key" in r.text
    # a sign-in posted from another site (no form token and cookie of this one) is refused
    http.cookies.clear()
    r = http.post("/signin", data={"key": keys["admin"], "csrf": "forged"})
    assert r.status_code == 403 and "another site" in r.text
    assert http.cookies.get("afinar_studio") is None


def test_session_cookie_is_httponly_strict_and_only_its_hash_is_kept(http, keys):
    r = post_signin(http, keys["admin"], next="//evil.example/x")
    assert r.status_code == 303 and r.headers["location"] == "/"  # no open redirect
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    token = http.cookies.get("afinar_studio")
    stored = http.app.state.studio_sessions.stored_hashes()
    assert token and token not in stored and keys["admin"] not in str(stored)
    import hashlib
    assert hashlib.sha256(token.encode()).hexdigest() in stored


def test_overview_and_keys_for_an_admin(http, keys):
    csrf = sign_in(http, keys["admin"])
    page = http.get("/").text
    assert "Overview" in page and "Machine" in page and "Worker" in page
    assert "No fine-tuning jobs yet" in page and 'href="/keys"' in page
    assert "boss" in page and "admin" in page
    r = http.get("/keys")
    assert r.status_code == 200 and "ann" in r.text and "support" in r.text
    # a form without the CSRF token is refused, with it the key is made and shown once
    assert http.post("/keys", data={"name": "x"}).status_code == 403
    r = http.post("/keys", data={"name": "carl", "groups": "billing", "csrf": csrf})
    secret = re.search(r'id="new-secret">([^<]+)<', r.text).group(1)
    assert ApiKeys().verify(secret).name == "carl"
    assert secret not in http.get("/keys").text  # shown once
    from afinar.store.audit import AuditLog

    made = ApiKeys().verify(secret).id
    done = [(e.key_name, e.action, e.object_id, e.status) for e in AuditLog().entries(20)]
    assert ("boss", "POST /keys (studio)", made, 200) in done  # audited as the API's writes
    assert ("boss", "POST /keys (studio)", None, 403) in done  # the refused one too
    assert ("boss", "POST /signin (studio)", None, 303) in done
    r = http.post("/keys", data={"name": "x" * 200, "csrf": csrf})
    assert r.status_code == 400 and "name: String should have at most 128" in r.text
    # revoke: the member's session ends at once
    other = TestClient(http.app)
    sign_in(other, keys["member"])
    assert other.get("/", follow_redirects=False).status_code == 200
    assert http.post(f"/keys/{keys['member_id']}/revoke", data={"csrf": "nope"}
                     ).status_code == 403
    r = http.post(f"/keys/{keys['member_id']}/revoke", data={"csrf": csrf},
                  follow_redirects=False)
    assert r.status_code == 303
    assert other.get("/", follow_redirects=False).status_code == 303


def test_a_member_sees_no_keys_page_and_its_own_groups(http, keys):
    csrf = sign_in(http, keys["member"])
    page = http.get("/").text
    assert 'href="/keys"' not in page and "support" in page
    r = http.get("/keys")
    assert r.status_code == 403 and "only an admin key may list API keys" in r.text
    assert http.post("/keys", data={"name": "x", "csrf": csrf}).status_code == 403
    assert not [k for k in ApiKeys().list() if k.name == "x"]


def test_the_api_with_the_session_cookie_needs_the_csrf_header_for_writes(http, keys):
    csrf = sign_in(http, keys["member"])
    me = http.get("/v1/keys/me").json()
    assert me["name"] == "ann" and me["groups"] == ["support"]
    r = http.post("/v1/vector_stores", json={"name": "kb"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = http.post("/v1/vector_stores", json={"name": "kb"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    # an Authorization header still comes first, as before the studio
    r = http.get("/v1/keys/me", headers={"Authorization": "Bearer " + keys["admin"]})
    assert r.json()["name"] == "boss"
    r = http.get("/v1/keys/me", headers={"Authorization": "Bearer sk-wrong"})
    assert r.status_code == 401


def test_sign_out_ends_the_session(http, keys):
    csrf = sign_in(http, keys["admin"])
    token = http.cookies.get("afinar_studio")
    assert http.post("/signout", data={"csrf": "wrong"}).status_code == 403
    r = http.post("/signout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin"
    assert http.app.state.studio_sessions.get(token) is None
    http.cookies.set("afinar_studio", token)  # a kept copy of the cookie is worth nothing
    assert http.get("/", follow_redirects=False).status_code == 303
    assert http.get("/v1/keys/me").status_code == 401


def test_local_development_mode_signs_in_without_a_key(home):
    app = create_app(auth=False)
    with TestClient(app) as http:
        assert "local development mode" in http.get("/signin").text
        csrf = sign_in(http, "")
        page = http.get("/").text
        assert "local development mode" in page and 'href="/keys"' in page
        assert "No keys yet" in http.get("/keys").text
        r = http.post("/keys", data={"name": "first", "admin": "on", "csrf": csrf})
        assert "new-secret" in r.text
        # a key exists now: the local session is over
        assert http.get("/", follow_redirects=False).status_code == 303
