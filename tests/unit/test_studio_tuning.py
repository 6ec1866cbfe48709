"""The studio's fine-tune pages: the form lists the caller's training files and models, the
estimate shows what ``auto`` resolves to (the worker's own ``resolve``), a job launched through
the API with the session runs, and its page and event stream show metrics, checkpoints and the
manifest; another key's job does not exist for a key outside its groups."""

import json
import re

import pytest

from afinar.models import Catalog
from afinar.server.app import create_app
from afinar.store.keys import ApiKeys
from tests.unit.test_studio import signed_in
from afinar.tuning import run_worker


def chat_rows(n):
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                            {"role": "assistant", "content": "Red and blue."}]})
                   + "\n" for i in range(n))


@pytest.fixture
def app(home, tiny_model_template):
    Catalog().add("tiny", tiny_model_template)
    app = create_app(auth=True)
    app.state.spawn_workers = False
    return app


def test_form_estimate_launch_job_page_and_stream(app):
    _, ann = ApiKeys().create("ann", groups="support")
    _, bob = ApiKeys().create("bob", groups="billing")
    http = signed_in(app, ann)
    assert "No training file yet" in http.get("/fine-tune").text
    fid = http.post("/v1/files", files={"file": ("t.jsonl", chat_rows(24).encode())},
                    data={"purpose": "fine-tune"}).json()["id"]
    page = http.get(f"/fine-tune?training_file={fid}&model=tiny").text
    assert f'value="{fid}" selected' in page and "<option selected>tiny</option>" in page
    est = http.get(f"/fine-tune/estimate?model=tiny&method=lora&training_file={fid}").json()
    assert est["examples"] == 24
    assert est["total_steps"] == est["steps_per_epoch"] * est["n_epochs"]
    assert est["tokens"] > 0 and est["seconds"] is None  # no job measured a rate yet
    fixed = http.get(f"/fine-tune/estimate?model=tiny&training_file={fid}&n_epochs=1"
                     "&batch_size=8").json()
    assert fixed["n_epochs"] == 1 and fixed["batch_size"] == 8 and fixed["total_steps"] == 3
    bad = http.get(f"/fine-tune/estimate?model=tiny&training_file={fid}&n_epochs=0")
    assert bad.status_code == 400 and "n_epochs" in bad.json()["error"]["message"]
    r = http.get("/fine-tune/estimate?model=nope&training_file=" + fid)
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]

    job = http.post("/v1/fine_tuning/jobs", json={
        "model": "tiny", "training_file": fid, "suffix": "studio", "seed": 3,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 8}}}}).json()
    assert http.get(f"/jobs/{job['id']}").status_code == 200
    other = signed_in(app, bob)
    assert other.get(f"/jobs/{job['id']}").status_code == 404
    assert other.get(f"/jobs/{job['id']}/stream").status_code == 404
    run_worker(exit_when_idle=True, log=lambda m: None)

    page = http.get(f"/jobs/{job['id']}").text
    assert "succeeded" in page and 'id="manifest"' in page
    assert "chat with it" in page
    body = http.get(f"/jobs/{job['id']}/stream").text
    kinds = re.findall(r"^event: (\w+)$", body, re.M)
    assert kinds[-1] == "end" and "job" in kinds and "checkpoints" in kinds
    metrics = [json.loads(d)["data"] for d in re.findall(r"^data: (.*)$", body, re.M)
               if '"type": "metrics"' in d]
    assert [m["step"] for m in metrics] == [1, 2, 3] and all("train_loss" in m for m in metrics)
    ids = [int(i) for i in re.findall(r"^id: (\d+)$", body, re.M)]
    resumed = http.get(f"/jobs/{job['id']}/stream", headers={"Last-Event-ID": str(ids[-2])}).text
    assert re.findall(r"^id: (\d+)$", resumed, re.M) == [str(ids[-1])]
    overview = http.get("/").text
    assert f"ft:tiny:afinar:studio:{job['id'][-8:]}" in overview
    assert f"/jobs/{job['id']}" in overview
    est = http.get(f"/fine-tune/estimate?model=tiny&training_file={fid}").json()
    assert est["seconds"] > 0 and est["measured_by"] == job["id"]


def test_job_actions_go_through_the_api(app):
    _, ann = ApiKeys().create("ann")
    http = signed_in(app, ann)
    fid = http.post("/v1/files", files={"file": ("t.jsonl", chat_rows(12).encode())},
                    data={"purpose": "fine-tune"}).json()["id"]
    job = http.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": fid}).json()
    assert http.post(f"/v1/fine_tuning/jobs/{job['id']}/pause").json()["status"] == "paused"
    r = http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers={"X-CSRF-Token": "x"})
    assert r.status_code == 403
    assert http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert "cancelled" in http.get(f"/jobs/{job['id']}").text
    assert "event: end" in http.get(f"/jobs/{job['id']}/stream").text
    assert http.get("/jobs/ftjob-nope").status_code == 404
