"""Errors versus warnings: only what makes training impossible or wrong blocks; duplicates, near
duplicates, few examples, missing system prompts and label imbalance are warnings with counts and
lines (``data validate``, upload, job events), dropped by ``--dedupe``. And validation before a job
exists: the method against the data's format, the validation file (no minimum size), in the
service, the CLI and the API."""

import json

import pytest
from fastapi.testclient import TestClient

from afinar.data.issues import CODES, blocks
from afinar.data.split import split_file
from afinar.data.validate import dedupe_file, validate_file
from afinar.errors import InvalidRequest
from afinar.models import Catalog
from afinar.settings import get_settings
from afinar.store.files import Files
from afinar.tuning import Jobs
from afinar.tuning.runner import JobRunner
from tests.helpers import run_cli


def chat(q, a, system=True):
    msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"messages": ([{"role": "system", "content": "Extract the entities."}] if system
                         else []) + msgs}


def entity_rows(n=240, repeats=6):
    """Entity extraction from financial sentences where a few sentences repeat (like the
    issue's file): rows ``n - repeats``.. repeat rows 24.."""
    rows = [chat(f"Company {i} reported revenue of {i * 3} million in Q{i % 4 + 1}.",
                 json.dumps({"org": f"Company {i}", "amount": f"{i * 3} million"}))
            for i in range(n - repeats)]
    return rows[:36] + [rows[23 + k] for k in range(repeats)] + rows[36:]


def write(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_duplicates_are_warnings_with_lines_not_errors(tmp_path):
    r = validate_file(write(tmp_path, entity_rows()))
    assert r.ok, [str(e) for e in r.errors]
    assert r.warning_counts["duplicate_example"] == 6
    dups = [w for w in r.warnings if w.code == "duplicate_example"]
    assert [(w.line, w.message) for w in dups[:2]] == [(37, "same example as line 24"),
                                                       (38, "same example as line 25")]
    assert r.n_examples == 240 and r.stats["duplicates"] == 6  # trained unless dropped
    line = next(x for x in r.warning_lines() if x.startswith("duplicate_example"))
    assert line.startswith("duplicate_example x6 (lines 37, 38, 39, 40, 41, ...)")
    assert "--dedupe" in line


WARNINGS = [
    ("near duplicate", [chat("question 0?", "Answer 0")] + [chat("QUESTION  0", "answer 0.")],
     "near_duplicate_example", 2),
    ("few examples", [], "few_examples", None),
    ("missing system", [chat("no system here", "ok", system=False)], "missing_system_message",
     None),
    ("label imbalance", [chat(f"is {i} spam?", "no") for i in range(30)] +
     [chat("is this spam?", "yes")], "label_imbalance", None),
]


@pytest.mark.parametrize("what,extra,code,line", WARNINGS, ids=[w[0] for w in WARNINGS])
def test_each_warning_is_reported_and_never_blocks(tmp_path, what, extra, code, line):
    base = [] if code == "label_imbalance" else [chat(f"question {i}?", f"answer {i}")
                                                 for i in range(1, 13)]
    r = validate_file(write(tmp_path, extra + base))
    assert r.ok, [str(e) for e in r.errors]
    hits = [w for w in r.warnings if w.code == code]
    assert hits and r.warning_counts[code] == 1, [str(w) for w in r.warnings]
    assert hits[0].line == line and hits[0].severity == "warning" and not blocks(code)
    if code == "missing_system_message":
        assert "(lines 1)" in hits[0].message


def test_the_table_says_which_codes_block():
    assert {c for c in CODES if not blocks(c)} == {
        "duplicate_example", "near_duplicate_example", "few_examples",
        "example_over_length_untrained", "special_token_in_content", "missing_system_message",
        "label_imbalance"}
    for code in ("invalid_json", "unrecognized_role", "example_missing_assistant_message",
                 "example_too_long", "too_few_examples"):
        assert blocks(code)
    doc = (__import__("pathlib").Path(__file__).parents[2] / "docs" / "data-validation.md")
    text = doc.read_text()
    for code, (severity, _) in CODES.items():
        assert f"| `{code}` | {'blocks' if severity == 'error' else 'warns'} |" in text, code


def test_dedupe_writes_a_copy_without_exact_duplicates(tmp_path, capsys):
    src = write(tmp_path, entity_rows())
    out = tmp_path / "dedup.jsonl"
    kept, dropped = dedupe_file(src, out)
    assert (kept, dropped) == (234, [37, 38, 39, 40, 41, 42])
    lines = src.read_bytes().splitlines()
    assert out.read_bytes().splitlines() == [x for i, x in enumerate(lines, 1)
                                             if i not in dropped]
    assert validate_file(out).warning_counts["duplicate_example"] == 0
    with pytest.raises(InvalidRequest):
        dedupe_file(src, src)
    code, o, err = run_cli(capsys, "data", "validate", str(src), "--no-tokens", "--dedupe",
                           "--out", str(tmp_path / "cli.jsonl"))
    assert code == 0 and "6 duplicates dropped" in o and "duplicate_example" in o, (o, err)
    assert (tmp_path / "cli.jsonl").read_bytes() == out.read_bytes()
    code, _, err = run_cli(capsys, "data", "validate", str(src), "--no-tokens", "--dedupe")
    assert code == 2 and "--out" in err


def test_validation_file_has_no_minimum_and_split_output_is_accepted(tmp_path):
    rows = [chat(f"question {i}?", f"answer {i}") for i in range(24)]
    s = split_file(write(tmp_path, rows, "all.jsonl"), tmp_path / "s", val=0.1, test=0.0)
    assert s.counts["val"] == 2
    assert validate_file(s.paths["val"], role="validation").ok
    few = validate_file(s.paths["val"])  # as a training file: below OpenAI's 10
    assert [e.code for e in few.errors] == ["too_few_examples"]


# -- jobs: events and validation before creating -----------------------------------------------

@pytest.fixture
def tiny_home(home, tiny_model_template):
    Catalog().add("tiny", tiny_model_template)
    return home


def upload(path):
    return Files().create_from_path(path, "fine-tune").id


PREF = {"input": {"messages": [{"role": "user", "content": "hi"}]},
        "preferred_output": [{"role": "assistant", "content": "Hello."}],
        "non_preferred_output": [{"role": "assistant", "content": "go away"}]}


def test_job_refuses_a_method_the_data_does_not_fit_before_it_exists(tiny_home, tmp_path):
    chat_file = upload(write(tmp_path, entity_rows(24, 0), "chat.jsonl"))
    pref_file = upload(write(tmp_path, [PREF] * 12, "pref.jsonl"))
    bad_val = upload(write(tmp_path, [chat("q", "a"), {"messages": []}], "val.jsonl"))
    cases = [
        (dict(training_file=chat_file, method={"type": "dpo"}), "training_file",
         "method dpo expects preference rows {input: {messages}, preferred_output: [assistant "
         "message], non_preferred_output: [assistant message]}; line 1 of chat.jsonl is a chat "
         "example"),
        (dict(training_file=pref_file, method={"type": "lora"}), "training_file",
         "method lora expects chat rows"),
        (dict(training_file=pref_file, validation_file=chat_file, method={"type": "dpo"}),
         "validation_file", "line 1 of chat.jsonl is a chat example"),
        (dict(training_file=chat_file, validation_file=bad_val), "validation_file",
         "val.jsonl is not a valid validation file (1 errors): line 2"),
    ]
    for kw, param, message in cases:
        with pytest.raises(InvalidRequest) as e:
            Jobs().create(model="tiny", **kw)
        assert e.value.param == param and message in e.value.message, e.value.message
    assert Jobs().list() == []
    small_val = upload(write(tmp_path, [chat("q1", "a1"), chat("q2", "a2")], "small.jsonl"))
    assert Jobs().create(model="tiny", training_file=chat_file, validation_file=small_val)


def test_job_events_carry_the_data_warnings(tiny_home, tmp_path):
    train = upload(write(tmp_path, entity_rows(60, 3)))
    val = upload(write(tmp_path, [chat("q1", "a1"), chat("q1", "a1")], "v.jsonl"))
    job = Jobs().create(model="tiny", training_file=train, validation_file=val, seed=1,
                        hyperparameters={"n_epochs": 1, "batch_size": 8})
    assert JobRunner(Jobs().get(job.id), get_settings(), "t").run() == "succeeded"
    warns = [e.message for e in Jobs().events(job.id) if e.level == "warn"]
    assert any(w.startswith("Training file: duplicate_example x3 (lines 37, 38, 39)")
               for w in warns), warns
    assert any(w.startswith("Validation file: duplicate_example x1 (line 2)") for w in warns)
    assert not any("few_examples" in w and "Validation" in w for w in warns)


def test_cli_tune_create_refuses_before_uploading_and_dedupes(tiny_home, tmp_path, capsys,
                                                              monkeypatch):
    chat_path = write(tmp_path, entity_rows(30, 3), "train.jsonl")
    code, _, err = run_cli(capsys, "tune", "create", "-m", "tiny", "--train", str(chat_path),
                           "--method", "dpo")
    assert code == 2 and "method dpo expects preference rows" in err, err
    assert "Traceback" not in err and Jobs().list() == [] and Files().list() == []
    monkeypatch.setattr("afinar.tuning.spawn_worker", lambda *a, **k: None)
    code, out, err = run_cli(capsys, "tune", "create", "-m", "tiny", "--train", str(chat_path),
                             "--dedupe", "--detach")
    assert code == 0, err
    assert "3 duplicate examples dropped (lines 28, 29, 30); 27 kept" in out
    (job,) = Jobs().list()
    uploaded = Files().get(job.training_file)
    assert uploaded.filename == "train.jsonl"
    assert len(Files().path(uploaded.id).read_text().splitlines()) == 27


@pytest.fixture
def api(tiny_home):
    from afinar.server.app import create_app

    app = create_app(auth=False)
    app.state.spawn_workers = False
    with TestClient(app) as http:
        yield http


def test_api_upload_accepts_duplicates_and_job_creation_checks_the_method(api, tmp_path):
    p = write(tmp_path, entity_rows())
    r = api.post("/v1/files", data={"purpose": "fine-tune"},
                 files={"file": ("entities.jsonl", p.read_bytes())})
    assert r.status_code == 200, r.text
    file_id = r.json()["id"]
    details = r.json()["status_details"]  # the warnings come back with the upload
    assert details.startswith("warnings: ") and "duplicate_example x6" in details
    assert "--dedupe" in details
    assert api.get(f"/v1/files/{file_id}").json()["status"] == "processed"
    r = api.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": file_id,
                                               "method": {"type": "dpo"}})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "training_file" and "expects preference rows" in err["message"]
    assert api.get("/v1/fine_tuning/jobs").json()["data"] == []
    r = api.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": file_id})
    assert r.status_code == 200, r.text
