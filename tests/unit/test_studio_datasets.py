"""The studio's datasets pages: a draft upload with an error shows its line, field and text;
token statistics, histogram and loss-mask preview come from the tiny model's tokenizer; PII
findings and the redacted copy; split; "use for training" goes through the API's check."""

import json
import re

import pytest
from fastapi.testclient import TestClient

from afinar.models import Catalog
from afinar.server.app import create_app
from afinar.store.files import Files
from tests.unit.test_studio import sign_in


def rows(n, bad_line=None):
    out = []
    for i in range(1, n + 1):
        if i == bad_line:
            out.append(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                {"role": "robot", "content": "BADROLE"}]}))
        else:
            out.append(json.dumps({"messages": [
                {"role": "user", "content": f"question {i} " + "word " * (i % 7)},
                {"role": "assistant", "content": f"answer {i}, mail me at ann{i}@example.com"}]}))
    return "\n".join(out) + "\n"


@pytest.fixture
def http(home, tiny_model_template):
    Catalog().add("tiny", tiny_model_template)
    app = create_app(auth=False)
    app.state.spawn_workers = False
    with TestClient(app) as c:
        c.headers["X-CSRF-Token"] = sign_in(c, "")
        yield c


def upload(http, name, text, purpose="user_data"):
    r = http.post("/v1/files", files={"file": (name, text.encode())}, data={"purpose": purpose})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_a_draft_with_an_error_shows_its_line_and_cannot_train(http):
    assert "No datasets yet" in http.get("/datasets").text
    fid = upload(http, "bad.jsonl", rows(12, bad_line=5))
    assert "bad.jsonl" in http.get("/datasets").text
    page = http.get(f"/datasets/{fid}?model=tiny").text
    assert "errors: fix them before training" in page
    errors = page[page.index('id="errors"'):page.index('id="stats"')]
    assert re.search(r'<td class="r">5</td><td><code>messages\[1\]\.role</code>', errors), errors
    assert "BADROLE" in errors  # the offending line's text
    button = page.split('id="use-for-training"')[0][-60:]
    assert "disabled" in button
    csrf = http.headers["X-CSRF-Token"]
    r = http.post(f"/datasets/{fid}/train", data={"csrf": csrf})
    assert r.status_code == 400 and "not a valid fine-tuning file" in r.text
    assert "line 5" in r.text and "Traceback" not in r.text


def test_a_valid_draft_report_histogram_preview_pii_redact_split_train(http):
    fid = upload(http, "good.jsonl", rows(24))
    page = http.get(f"/datasets/{fid}?model=tiny").text
    assert "valid: ready for training" in page
    hist = re.search(r'<svg class="chart" id="histogram".*?</svg>', page, re.S).group(0)
    counts = [int(n) for n in re.findall(r"tokens: (\d+) examples", hist)]
    assert sum(counts) == 24 and len(counts) > 1
    preview = page[page.index('id="preview"'):page.index('id="pii"')]
    assert preview.count('<pre class="mask">') == 3 and '<span class="t">' in preview
    first = preview[preview.index('<pre class="mask">'):]
    trained = re.search(r'<span class="t">(.*?)</span>', first, re.S).group(1)
    assert "answer 1" in trained and "question 1" not in trained
    pii = page[page.index('id="pii"'):]
    assert "24 findings" in pii and "ann1@example.com" not in pii  # masked
    csrf = http.headers["X-CSRF-Token"]
    assert http.post(f"/datasets/{fid}/redact", data={}).status_code == 403  # no CSRF token
    r = http.post(f"/datasets/{fid}/redact", data={"csrf": csrf}, follow_redirects=False)
    red = r.headers["location"].rsplit("/", 1)[-1]
    assert "@example.com" not in Files().path(red).read_text()
    assert "No personal data found" in http.get(f"/datasets/{red}").text
    r = http.post(f"/datasets/{fid}/split", data={"csrf": csrf, "val": "0.25", "test": "0"},
                  follow_redirects=False)
    assert r.status_code == 303
    names = {f.filename for f in Files().list("user_data")}
    assert {"good.train.jsonl", "good.val.jsonl", "good.redacted.jsonl"} <= names
    r = http.post(f"/datasets/{fid}/train", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/fine-tune?training_file=")
    new = r.headers["location"].split("=", 1)[1]
    assert Files().get(new).purpose == "fine-tune"


def test_csv_conversion_and_unknown_files(http):
    fid = upload(http, "qa.csv", "question,answer\nhow?,like this\nwhy?,because\n")
    page = http.get(f"/datasets/{fid}").text
    assert 'id="convert"' in page
    csrf = http.headers["X-CSRF-Token"]
    r = http.post(f"/datasets/{fid}/convert", data={"csrf": csrf, "user_col": "nope",
                                                     "assistant_col": "answer"})
    assert r.status_code == 400 and "nope" in r.text and 'id="action-error"' in r.text
    r = http.post(f"/datasets/{fid}/convert", data={"csrf": csrf, "user_col": "question",
                                                     "assistant_col": "answer"},
                  follow_redirects=False)
    out = r.headers["location"].rsplit("/", 1)[-1]
    first = json.loads(Files().path(out).read_text().splitlines()[0])
    assert first["messages"][0] == {"role": "user", "content": "how?"}
    r = http.get("/datasets/file-nope")
    assert r.status_code == 404 and "no file &#39;file-nope&#39;" in r.text
