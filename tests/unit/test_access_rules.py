"""One rule for who may read a file (``afinar.store.access``), enforced on every path to its
content: the holes of issue 12 (raw content and listings that followed the uploader while
retrieval followed the document, re-adds and attribute updates that moved or widened readers,
stores and jobs any key could change), each reproduced through the HTTP API with keys of
different groups."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from afinar.models import Catalog
from afinar.server.app import create_app
from afinar.store.keys import ApiKeys

HR_TEXT = "# Salaries\n\nThe salary band of level seven is 91377 a year.\n"
PUBLIC_TEXT = "# Lunch\n\nLunch is served in the hall at noon every weekday.\n"


def chat_rows(n: int) -> str:
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                            {"role": "assistant", "content": "Red."}]}) + "\n"
                   for i in range(n))


class Api:
    """One key's view of the server: ``api.get(path)`` etc. with its bearer token."""

    def __init__(self, http: TestClient, key: str):
        self.http, self.headers = http, {"Authorization": f"Bearer {key}"}

    def __getattr__(self, method):
        return lambda path, **kw: self.http.request(method.upper(), "/v1" + path,
                                                    headers=self.headers, **kw)

    def upload(self, name: str, text: str, purpose: str = "assistants") -> str:
        r = self.post("/files", files={"file": (name, text.encode())}, data={"purpose": purpose})
        assert r.status_code == 200, r.text
        return r.json()["id"]

    def store(self, **body) -> str:
        r = self.post("/vector_stores", json=body)
        assert r.status_code == 200, r.text
        return r.json()["id"]

    def add(self, store: str, file_id: str, attributes: dict | None = None):
        return self.post(f"/vector_stores/{store}/files",
                         json={"file_id": file_id, "attributes": attributes})

    def found(self, store: str, query: str = "salary band level seven") -> set[str]:
        r = self.post(f"/vector_stores/{store}/search", json={"query": query})
        assert r.status_code == 200, r.text
        return {h["file_id"] for h in r.json()["data"]}

    def reads(self, file_id: str) -> bool:
        """Whether every files-API path shows the file: retrieve, content, listing."""
        got = [self.get(f"/files/{file_id}").status_code == 200,
               self.get(f"/files/{file_id}/content").status_code == 200,
               file_id in {f["id"] for f in self.get("/files").json()["data"]}]
        assert len(set(got)) == 1, got  # the same answer on every path
        return got[0]

    def lists(self, store: str, file_id: str) -> bool:
        data = self.get(f"/vector_stores/{store}/files").json()["data"]
        one = self.get(f"/vector_stores/{store}/files/{file_id}").status_code == 200
        content = self.get(f"/vector_stores/{store}/files/{file_id}/content").status_code == 200
        got = [file_id in {f["id"] for f in data}, one, content]
        assert len(set(got)) == 1, got
        return got[0]


@pytest.fixture
def keys(home, tiny_model_template):
    Catalog().add("tiny", tiny_model_template)
    k = ApiKeys()
    secrets = {"admin": k.create("root", admin=True)[1],
               "both": k.create("hr-and-eng", "hr,eng")[1],
               "hr": k.create("hr", "hr")[1], "hr2": k.create("hr two", "hr")[1],
               "eng": k.create("eng", "eng")[1], "none": k.create("nobody")[1]}
    app = create_app()
    app.state.spawn_workers = False
    with TestClient(app) as http:
        yield {name: Api(http, s) for name, s in secrets.items()}


def test_raw_content_and_listings_follow_the_documents_readers(keys):
    """Issue 12, 1: an hr+eng key restricts its file to hr; an eng key neither reads the raw
    text nor sees the file anywhere, as in search."""
    both, hr, eng = keys["both"], keys["hr"], keys["eng"]
    fid = both.upload("salaries.md", HR_TEXT)
    assert eng.reads(fid)  # before any restriction: the uploader's groups (hr, eng)
    store = both.store(name="people")
    assert both.add(store, fid, {"groups": "hr"}).status_code == 200
    assert not eng.reads(fid) and not eng.lists(store, fid) and fid not in eng.found(store)
    assert eng.get(f"/vector_stores/{store}").json()["file_counts"]["total"] == 0
    assert hr.reads(fid) and hr.lists(store, fid) and fid in hr.found(store)
    assert hr.get(f"/files/{fid}/content").text == HR_TEXT
    assert both.reads(fid) and keys["admin"].reads(fid)
    assert not keys["none"].reads(fid)


def test_re_adding_a_file_elsewhere_never_changes_who_reads_it(keys):
    """Issue 12, 2: the eng key cannot re-add the hr file (it does not exist for it); an hr
    key that did not upload it re-adds it: the new document has the file's readers."""
    both, hr, eng = keys["both"], keys["hr"], keys["eng"]
    fid = both.upload("salaries.md", HR_TEXT)
    first = both.store(name="people")
    assert both.add(first, fid, {"groups": "hr"}).status_code == 200
    other = eng.store(name="eng's")
    assert eng.add(other, fid, {"groups": "eng"}).status_code == 404
    assert eng.post("/vector_stores", json={"file_ids": [fid]}).status_code == 404
    r = eng.post(f"/vector_stores/{other}/file_batches", json={"file_ids": [fid]})
    assert r.status_code == 404
    assert hr.add(other, fid, {"groups": "eng"}).status_code == 403  # not in eng
    r = keys["hr2"].add(other, fid, {"groups": "hr,eng"})
    assert r.status_code == 403  # not its file, whatever groups it holds
    assert hr.add(other, fid).status_code == 200  # no groups: the file's
    assert hr.add(other, fid, {"groups": "hr"}).status_code == 200  # the same: no change
    assert fid in hr.found(other) and fid in hr.found(first)
    assert fid not in eng.found(other) and not eng.lists(other, fid) and not eng.reads(fid)
    # batches (and the same file in two batches) follow the same rule
    r = keys["hr2"].post(f"/vector_stores/{other}/file_batches",
                         json={"files": [{"file_id": fid, "attributes": {"groups": ""}}]})
    assert r.status_code == 403 and not eng.reads(fid)


def test_the_uploader_changes_the_groups_everywhere_at_once(keys):
    """The owner's change of groups applies to the file and every store it is in: never two
    stores disagreeing about who reads the same file."""
    both, hr, eng = keys["both"], keys["hr"], keys["eng"]
    fid = both.upload("salaries.md", HR_TEXT)
    s1, s2 = both.store(name="one"), both.store(name="two")
    assert both.add(s1, fid, {"groups": "hr"}).status_code == 200
    assert both.add(s2, fid, {"groups": "eng", "n": 2}).status_code == 200
    for s in (s1, s2):
        assert fid in eng.found(s) and fid not in hr.found(s)
        assert eng.lists(s, fid) and not hr.lists(s, fid)
    assert eng.reads(fid) and not hr.reads(fid)
    attrs = eng.get(f"/vector_stores/{s1}/files/{fid}").json()["attributes"]
    assert attrs == {"groups": "eng"}  # s1's own attributes, the file's groups
    r = eng.post(f"/vector_stores/{s1}/search",
                 json={"query": "salary band", "filters": {"type": "eq", "key": "groups",
                                                           "value": "eng"}})
    assert fid in {h["file_id"] for h in r.json()["data"]}


def test_an_attribute_update_without_groups_never_widens(keys):
    """Issue 12, 3: an admin uploads and restricts to hr; an hr key updates other attributes:
    the document stays hr's (it used to fall back to the admin's groups: public)."""
    admin, hr, eng = keys["admin"], keys["hr"], keys["eng"]
    fid = admin.upload("salaries.md", HR_TEXT)
    store = admin.store(name="people")
    assert admin.add(store, fid, {"groups": "hr"}).status_code == 200
    r = hr.post(f"/vector_stores/{store}/files/{fid}", json={"attributes": {"reviewed": True}})
    assert r.status_code == 200 and r.json()["attributes"] == {"reviewed": True, "groups": "hr"}
    for key in (eng, keys["none"]):
        assert fid not in key.found(store) and not key.lists(store, fid) and not key.reads(fid)
    assert fid in hr.found(store) and hr.reads(fid)
    r = admin.post(f"/vector_stores/{store}/files/{fid}", json={"attributes": {}})
    assert r.status_code == 200 and not eng.reads(fid)  # the admin's update: still hr's


def test_only_the_uploader_or_an_admin_may_change_groups(keys):
    """Issue 12, 4: an hr key that did not upload the file cannot make it public."""
    both, hr, eng = keys["both"], keys["hr"], keys["eng"]
    fid = both.upload("salaries.md", HR_TEXT)
    store = both.store(name="people")
    assert both.add(store, fid, {"groups": "hr"}).status_code == 200
    r = hr.post(f"/vector_stores/{store}/files/{fid}", json={"attributes": {"groups": ""}})
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    assert not eng.reads(fid) and fid not in eng.found(store)
    r = both.post(f"/vector_stores/{store}/files/{fid}", json={"attributes": {"groups": ""}})
    assert r.status_code == 200  # the uploader may
    assert eng.reads(fid) and keys["none"].reads(fid) and fid in eng.found(store)
    # a key without groups: its files are its own until it shares them
    mine = keys["none"].upload("lunch.md", PUBLIC_TEXT)
    assert not eng.reads(mine) and keys["admin"].reads(mine)
    assert keys["none"].add(store, mine, {"groups": ""}).status_code == 200
    assert eng.reads(mine) and mine in eng.found(store, "lunch hall noon")
    # and only the uploader (or an admin) deletes a file, or removes it from a store it did
    # not make
    assert hr.delete(f"/files/{fid}").status_code == 403
    assert hr.delete(f"/vector_stores/{store}/files/{fid}").status_code == 403
    assert both.delete(f"/vector_stores/{store}/files/{fid}").status_code == 200


def test_stores_are_renamed_and_deleted_by_their_creator_or_an_admin(keys):
    """Issue 12, 5 (stores): any key used to rename or delete a shared store holding
    documents it cannot read."""
    hr, eng = keys["hr"], keys["eng"]
    fid = hr.upload("salaries.md", HR_TEXT)
    store = hr.store(name="hr docs", file_ids=[fid])
    seen = eng.get(f"/vector_stores/{store}").json()
    assert seen["file_counts"]["total"] == 0 and seen["usage_bytes"] == 0
    for r in (eng.post(f"/vector_stores/{store}", json={"name": "mine now"}),
              eng.delete(f"/vector_stores/{store}"),
              keys["hr2"].delete(f"/vector_stores/{store}")):
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert hr.get(f"/vector_stores/{store}").json()["name"] == "hr docs"
    assert hr.post(f"/vector_stores/{store}", json={"name": "renamed"}).status_code == 200
    assert keys["admin"].delete(f"/vector_stores/{store}").status_code == 200


def test_jobs_are_seen_by_their_groups_and_changed_by_their_creator(keys):
    """Issue 12, 5 (jobs): any key used to list, read, pause and cancel another group's job."""
    hr, eng = keys["hr"], keys["eng"]
    train = hr.upload("train.jsonl", chat_rows(12), "fine-tune")
    r = hr.post("/fine_tuning/jobs", json={"model": "tiny", "training_file": train,
                                           "suffix": "hr", "metadata": {"team": "hr"}})
    assert r.status_code == 200, r.text
    job = r.json()["id"]
    base = f"/fine_tuning/jobs/{job}"
    assert job not in {j["id"] for j in eng.get("/fine_tuning/jobs").json()["data"]}
    assert job not in {j["id"] for j in
                       eng.get("/fine_tuning/jobs", params={"metadata[team]": "hr"}).json()
                       ["data"]}
    for r in (eng.get(base), eng.get(base + "/events"), eng.get(base + "/checkpoints"),
              eng.post(base + "/pause"), eng.post(base + "/cancel"),
              eng.post(base + "/resume")):
        assert r.status_code == 404, r.request.url
    hr2 = keys["hr2"]  # the same group: sees it, may not change it
    assert hr2.get(base).status_code == 200 and hr2.get(base + "/events").status_code == 200
    assert job in {j["id"] for j in hr2.get("/fine_tuning/jobs").json()["data"]}
    assert hr2.post(base + "/cancel").status_code == 403
    assert hr.post(base + "/pause").status_code == 200
    assert keys["admin"].post(base + "/cancel").json()["status"] == "cancelled"


def test_a_jobs_results_file_is_read_by_the_jobs_readers(keys):
    """The results CSV a job writes belongs to the job's creator, groups and project (it was
    made without a key, so only admins could read it)."""
    from afinar.settings import get_settings
    from afinar.tuning.jobs import Jobs
    from afinar.tuning.runner import JobRunner

    http = keys["hr"].http
    made = {n: Api(http, ApiKeys().create(f"acme {n}", g, project="acme")[1])
            for n, g in (("hr", "hr"), ("hr2", "hr"), ("eng", "eng"))}
    hr = made["hr"]
    train = hr.upload("train.jsonl", chat_rows(12), "fine-tune")
    r = hr.post("/fine_tuning/jobs", json={"model": "tiny", "training_file": train,
                                           "hyperparameters": {"n_epochs": 1}})
    job = r.json()["id"]
    assert JobRunner(Jobs().get(job), get_settings(), "test").run() == "succeeded"
    (result,) = hr.get(f"/fine_tuning/jobs/{job}").json()["result_files"]
    assert hr.get(f"/files/{result}/content").text.startswith("step,")
    assert made["hr2"].reads(result) and hr.reads(result)
    assert not made["eng"].reads(result)
    assert not keys["hr"].reads(result)  # the same group in another project: no such file
