"""The studio's playground page (models and knowledge bases the caller may pick; a checkpoint's
"chat with it" link preselects it; the page streams through the API) and evaluations (launch,
progress, the report of ``afinar eval report --html``, another project's run absent)."""

import json
import re
import time

import pytest
from fastapi.testclient import TestClient

from afinar.models import Catalog
from afinar.server.app import create_app
from afinar.store.keys import ApiKeys
from tests.unit.test_studio import signed_in


@pytest.fixture
def app(home, tiny_model_template):
    Catalog().add("tiny", tiny_model_template)
    app = create_app(auth=True)
    app.state.spawn_workers = False
    return app


def test_playground_lists_models_and_streams_through_the_api(app):
    _, key = ApiKeys().create("ann")
    http = signed_in(app, key)
    page = http.get("/playground?model=tiny").text
    first = page[page.index('data-col="0"'):page.index('data-col="1"')]
    assert "<option selected>tiny</option>" in first
    assert page.count('class="card pg-col"') == 4
    assert len(re.findall(r'data-col="\d" hidden', page)) == 2  # two of four columns shown
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "seed": 1, "temperature": 0.7, "stream": True}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    again = http.post("/v1/chat/completions", json=body).text
    text = lambda s: "".join(  # noqa: E731
        (json.loads(line[5:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for line in s.splitlines() if line.startswith("data: {"))
    assert text(r.text) == text(again)  # same seed: the same answer in every column
    nokey = TestClient(app).post("/v1/chat/completions", json=body)
    assert nokey.status_code == 401


def test_launch_follow_and_read_an_evaluation(app):
    _, key = ApiKeys().create("ann", admin=True)
    _, other = ApiKeys().create("eve", admin=True, project="elsewhere")
    http = signed_in(app, key)
    assert "No test file yet" in http.get("/evals").text
    rows = "".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                            {"role": "assistant", "content": "blue"}]}) + "\n"
                   for i in range(5))
    fid = http.post("/v1/files", files={"file": ("test.jsonl", rows.encode())},
                    data={"purpose": "user_data"}).json()["id"]
    csrf = http.headers["X-CSRF-Token"]
    r = http.post("/evals", data={"csrf": csrf, "test_file": fid, "model": "tiny",
                                  "strategies": "base, nope"})
    assert r.status_code == 400 and "nope" in r.text and 'id="launch-error"' in r.text
    r = http.post("/evals", data={"csrf": csrf, "test_file": "file-nope", "model": "tiny"})
    assert r.status_code == 400 and "file-nope" in r.text
    r = http.post("/evals", data={"csrf": csrf, "name": "smoke", "test_file": fid,
                                  "model": "tiny", "strategies": "base", "limit": "3",
                                  "max_tokens": "4"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    run_id = r.headers["location"].rsplit("/", 1)[-1]
    for _ in range(600):
        p = http.get(f"/evals/{run_id}/progress").json()
        if p["status"] != "running":
            break
        time.sleep(0.2)
    assert p["status"] == "succeeded", p
    assert p["answered"] == p["total"] == 3
    page = http.get(f"/evals/{run_id}").text
    assert f'src="/evals/{run_id}/report.html"' in page
    from afinar.evals.report import render_html
    from afinar.evals.runner import get_run

    report = http.get(f"/evals/{run_id}/report.html")
    assert report.text == render_html(get_run(run_id).summary())
    assert "smoke" in http.get("/evals").text and run_id in http.get("/").text
    elsewhere = signed_in(app, other)
    assert elsewhere.get(f"/evals/{run_id}").status_code == 404
    assert elsewhere.get(f"/evals/{run_id}/report.html").status_code == 404
    assert run_id not in elsewhere.get("/evals").text
