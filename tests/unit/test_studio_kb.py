"""The studio's knowledge-base pages: documents with chunk counts and readers, a search whose
hits carry lexical, dense and fused scores and heading paths, filtered by the caller's groups
(two members see different documents; an admin searches "as group X", a member may not), the
chunk a hit or citation points at, and check/repair."""

import re
import time

import pytest

from afinar.server.app import create_app
from afinar.store.keys import ApiKeys
from tests.unit.test_studio import signed_in

DOCS = {"wifi.md": ("# Router\n\n## Wi-Fi\n\nTo reset the router's Wi-Fi, hold the reset "
                    "button for ten seconds until the light turns blue.\n", "support"),
        "billing.md": ("# Billing\n\n## Invoices\n\nInvoices are sent on the first day of each "
                       "month; reset your billing address in the portal.\n", "billing")}


@pytest.fixture
def kb(home):
    app = create_app(auth=True)
    app.state.spawn_workers = False
    keys = {"admin": ApiKeys().create("boss", admin=True)[1],
            "ann": ApiKeys().create("ann", groups="support")[1],
            "bill": ApiKeys().create("bill", groups="billing")[1]}
    admin = signed_in(app, keys["admin"])
    assert "No knowledge bases yet" in admin.get("/kb").text
    sid = admin.post("/v1/vector_stores", json={"name": "help"}).json()["id"]
    for name, (text, group) in DOCS.items():
        fid = admin.post("/v1/files", files={"file": (name, text.encode())},
                         data={"purpose": "assistants"}).json()["id"]
        vf = admin.post(f"/v1/vector_stores/{sid}/files",
                        json={"file_id": fid, "attributes": {"groups": group}}).json()
        for _ in range(200):
            if vf["status"] != "in_progress":
                break
            time.sleep(0.1)
            vf = admin.get(f"/v1/vector_stores/{sid}/files/{fid}").json()
        assert vf["status"] == "completed", vf
    return app, keys, sid, admin


def test_documents_search_scores_and_groups(kb):
    app, keys, sid, admin = kb
    page = admin.get(f"/kb/{sid}").text
    docs = page[page.index('id="docs"'):]
    assert "wifi.md" in docs and "billing.md" in docs and "support" in docs
    assert re.search(r'<td class="r">1</td>', docs)  # one chunk each
    assert "Search as group" in page and "<option>billing</option>" in page
    r = admin.get(f"/kb/{sid}/search", params={"q": "reset"}).json()
    assert {h["filename"] for h in r["data"]} == {"wifi.md", "billing.md"}
    hit = r["data"][0]
    assert hit["heading_path"] and hit["score_kind"] and hit["lexical_score"] is not None
    assert hit["dense_score"] is not None and hit["lexical_rank"] >= 1
    as_billing = admin.get(f"/kb/{sid}/search", params={"q": "reset", "as_group": "billing"})
    assert [h["filename"] for h in as_billing.json()["data"]] == ["billing.md"]
    ann = signed_in(app, keys["ann"])
    bill = signed_in(app, keys["bill"])
    seen_ann = {h["filename"] for h in ann.get(f"/kb/{sid}/search", params={"q": "reset"}
                                              ).json()["data"]}
    seen_bill = {h["filename"] for h in bill.get(f"/kb/{sid}/search", params={"q": "reset"}
                                                ).json()["data"]}
    assert seen_ann == {"wifi.md"} and seen_bill == {"billing.md"}
    r = ann.get(f"/kb/{sid}/search", params={"q": "reset", "as_group": "billing"})
    assert r.status_code == 403 and "only an admin key" in r.json()["error"]["message"]
    assert "Search as group" not in ann.get(f"/kb/{sid}").text
    assert "billing.md" not in ann.get(f"/kb/{sid}").text
    assert ann.get(f"/kb/{sid}/search", params={"q": " "}).status_code == 400
    # the chunk behind a hit: readable by its readers only (others: 404, as unknown)
    hits = admin.get(f"/kb/{sid}/search", params={"q": "router light"}).json()["data"]
    chunk = next(h for h in hits if h["filename"] == "wifi.md")
    assert "ten seconds" in ann.get(f"/kb/{sid}/chunks/{chunk['chunk_id']}").text
    assert bill.get(f"/kb/{sid}/chunks/{chunk['chunk_id']}").status_code == 404
    cite = ann.get(f"/kb/{sid}/cite", params={"file_id": chunk["file_id"],
                                             "quote": "hold the reset button"})
    assert cite.status_code == 200 and "Router › Wi-Fi" in cite.text
    assert bill.get(f"/kb/{sid}/cite", params={"file_id": chunk["file_id"]}).status_code == 404


def test_check_repair_and_unknown_store(kb):
    app, keys, sid, admin = kb
    csrf = admin.headers["X-CSRF-Token"]
    r = admin.post(f"/kb/{sid}/check", data={"csrf": csrf})
    assert r.status_code == 200 and "Consistent" in r.text
    assert admin.post(f"/kb/{sid}/check", data={}).status_code == 403  # no CSRF token
    ann = signed_in(app, keys["ann"])
    r = ann.post(f"/kb/{sid}/check", data={"csrf": ann.headers["X-CSRF-Token"], "repair": "1"})
    assert r.status_code == 403 and "only the key that created it" in r.text
    assert admin.get("/kb/vs_nope").status_code == 404
    assert "help" in admin.get("/kb").text and f"/kb/{sid}" in admin.get("/").text
