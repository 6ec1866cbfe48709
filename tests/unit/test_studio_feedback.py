"""Feedback from the studio's playground (``POST /playground/feedback``): the API's route
function with the session's caller, so a key rates and corrects only answers its groups may
read (another group's completion is the API's 404), the form needs the session's CSRF token,
and a malformed form is a 4xx page or error object, never a 500."""

import re

import pytest
from fastapi.testclient import TestClient

from afinar.models import Catalog
from afinar.server.app import create_app
from afinar.settings import reset_settings
from afinar.store.access import Caller
from afinar.store.audit import AuditLog
from afinar.store.feedback import Feedback
from afinar.store.keys import ApiKeys
from tests.unit.test_studio import signed_in

JSON = {"Accept": "application/json"}
OWNER = Caller(None, "test", admin=True, owner=True)


@pytest.fixture
def app(home, tiny_model_template, monkeypatch):
    monkeypatch.setenv("AFINAR_LOG_REQUESTS", "on")
    reset_settings()
    Catalog().add("tiny", tiny_model_template)
    app = create_app(auth=True)
    app.state.spawn_workers = False
    return app


def chat(http: TestClient) -> str:
    """A chat completion through the API with the session cookie, as the playground sends it;
    its id."""
    r = http.post("/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "Which colour is the sky?"}],
        "max_tokens": 3, "seed": 1})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_a_key_rates_and_corrects_only_its_groups_answers(app):
    _, alice = ApiKeys().create("alice", groups="team-a")
    _, bob = ApiKeys().create("bob", groups="team-b")
    a, b = signed_in(app, alice), signed_in(app, bob)
    page = a.get("/playground").text
    assert page.count('action="/playground/feedback"') == 8  # rate and correct, 4 columns
    csrf = a.headers["X-CSRF-Token"]
    mine, bobs = chat(a), chat(b)

    r = a.post("/playground/feedback", headers=JSON, data={
        "csrf": csrf, "type": "rating", "request_id": mine, "rating": "-1"})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "feedback" and r.json()["rating"] == -1
    r = a.post("/playground/feedback", data={  # a plain form post: a page
        "csrf": csrf, "type": "correction", "request_id": mine, "correction": "Blue."})
    assert r.status_code == 200 and 'id="feedback-recorded"' in r.text and "Blue." in r.text
    rows = Feedback().items(OWNER, request_id=mine)
    assert sorted((f.type, f.rating, f.correction, f.key_name, f.project_id, r.owner_groups)
                  for f, r in rows) == [
        ("correction", None, "Blue.", "alice", "default", ["team-a"]),
        ("rating", -1, None, "alice", "default", ["team-a"])]

    # another group's completion: the API's 404 through the studio, as through /v1/feedback
    r = a.post("/playground/feedback", headers=JSON, data={
        "csrf": csrf, "type": "rating", "request_id": bobs, "rating": "1"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "request_id"
    r = a.post("/playground/feedback", data={
        "csrf": csrf, "type": "correction", "request_id": bobs, "correction": "no"})
    assert r.status_code == 404 and 'id="page-error"' in r.text and bobs in r.text
    api = TestClient(app).post("/v1/feedback", headers={"Authorization": f"Bearer {alice}"},
                               json={"request_id": bobs, "type": "rating", "rating": 1})
    assert api.status_code == 404
    assert Feedback().items(OWNER, request_id=bobs) == []
    assert b.post("/playground/feedback", headers=JSON, data={  # bob may rate his own
        "csrf": b.headers["X-CSRF-Token"], "type": "rating", "request_id": bobs,
        "rating": "1"}).status_code == 200
    assert [f.key_name for f, _ in Feedback().items(OWNER, request_id=bobs)] == ["bob"]

    done = [(e.key_name, e.action, e.status) for e in AuditLog().entries(20)]
    assert ("alice", "POST /playground/feedback (studio)", 200) in done
    assert ("alice", "POST /playground/feedback (studio)", 404) in done


MALFORMED = [  # (form fields, status, what the message names)
    ({"type": "rating", "rating": "-1", "request_id": ""}, 400, "request_id"),
    ({"type": "thumbs", "rating": "1"}, 400, "type must be one of rating, correction"),
    ({"type": "", "rating": "1"}, 400, "type must be one of"),
    ({"type": "rating", "rating": "sideways"}, 400, "rating must be 1 or -1"),
    ({"type": "rating", "rating": "2"}, 400, "rating must be 1 or -1"),
    ({"type": "rating"}, 400, "rating must be 1 or -1"),
    ({"type": "correction"}, 400, "correction"),
    ({"type": "correction", "correction": "   "}, 400, "correction is empty"),
    ({"type": "correction", "correction": "x" * 70_000}, 400, "correction"),
    ({"type": "rating", "rating": "1", "reason": "r" * 5000}, 400, "reason"),
    ({"type": "rating", "rating": "1", "request_id": "x" * 5000}, 400, "request_id"),
    ({"type": "rating", "rating": "1", "request_id": "chatcmpl-nope"}, 404, "chatcmpl-nope"),
]


def test_a_malformed_form_is_a_4xx_page_never_a_500(app):
    _, alice = ApiKeys().create("alice", groups="team-a")
    a = signed_in(app, alice)
    mine = chat(a)
    for form, status, says in MALFORMED:
        data = {"csrf": a.headers["X-CSRF-Token"], "request_id": mine, **form}
        r = a.post("/playground/feedback", data=data)
        assert r.status_code == status, (form, r.text)
        assert 'id="page-error"' in r.text and says in r.text and "Traceback" not in r.text
        j = a.post("/playground/feedback", data=data, headers=JSON)
        err = j.json()["error"]
        assert j.status_code == status and says in err["message"] + (err["param"] or ""), err
    assert Feedback().items(OWNER) == []


def test_csrf_and_session_are_required_and_logging_off_says_so(app, monkeypatch):
    _, alice = ApiKeys().create("alice", groups="team-a")
    a = signed_in(app, alice)
    mine = chat(a)
    form = {"type": "rating", "request_id": mine, "rating": "1"}
    assert a.post("/playground/feedback", data=form).status_code == 403
    assert a.post("/playground/feedback", data={**form, "csrf": "forged"}).status_code == 403
    r = TestClient(app).post("/playground/feedback", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")
    assert Feedback().items(OWNER) == []

    monkeypatch.setenv("AFINAR_LOG_REQUESTS", "off")
    reset_settings()
    off = create_app(auth=True)
    page = signed_in(off, alice).get("/playground").text
    assert 'id="pg-no-feedback"' in page and "AFINAR_LOG_REQUESTS=on" in page
    assert not re.search(r'action="/playground/feedback"', page)
