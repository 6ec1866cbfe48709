"""Feedback on served answers (issue #16): the request log (off by default; on, PII-redacted,
pruned after the retention period), feedback by id (rating, correction, preference) scoped like
the request's key, over the ``openai`` SDK against a live server and the CLI; datasets built from
it (``afinar feedback export --as dpo|kto|sft``) that the upload validator accepts, with the
counts of what was dropped and why."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import httpx
import openai
import pytest
from sqlalchemy import func, select

from afinar.data.feedback import add_feedback, build, export
from afinar.data.validate import validate_file
from afinar.errors import InvalidRequest, NotFound
from afinar.models import Catalog
from afinar.server.app import create_app
from afinar.settings import Settings, get_settings, reset_settings
from afinar.store.access import Caller
from afinar.store.audit import AuditLog
from afinar.store.feedback import DAY, Feedback, FeedbackRecord, RequestRecord
from afinar.store.keys import ApiKeys
from tests.live_server import client, complete, live_server
from tests.helpers import run_cli
from tests.unit.test_server_tuning_rag import server, upload  # noqa: F401 (fixture)

EMAIL = "jane.doe@example.com"
MSGS = [{"role": "user", "content": f"hello, I am {EMAIL}"}]


def _count(store: Feedback, table) -> int:
    with store.db.session() as s:
        return s.scalar(select(func.count()).select_from(table))


def _post(c: openai.OpenAI, body: dict) -> dict:
    return c.post("/feedback", body=body, cast_to=httpx.Response).json()


def _list(c: openai.OpenAI, **params) -> dict:
    return c.get("/feedback", cast_to=httpx.Response, options={"params": params}).json()


@pytest.fixture
def served(home, tiny_model_template, monkeypatch):
    """A live server with request logging on and four keys: ``admin``, ``a`` and ``a2``
    (team-a), ``b`` (team-b)."""
    monkeypatch.setenv("AFINAR_LOG_REQUESTS", "on")
    reset_settings()
    Catalog().add("tiny", tiny_model_template)
    keys = ApiKeys()
    secrets = {"admin": keys.create("admin", admin=True)[1],
               "a": keys.create("alice", "team-a")[1], "a2": keys.create("ann", "team-a")[1],
               "b": keys.create("bob", "team-b")[1]}
    app = create_app()
    app.state.spawn_workers = False
    with live_server(app) as url:
        yield SimpleNamespace(url=url, app=app, store=Feedback(),
                              **{k: client(url, v) for k, v in secrets.items()})


def test_logging_is_off_by_default(home, tiny_model_template):
    assert get_settings().log_requests is False
    Catalog().add("tiny", tiny_model_template)
    app = create_app()
    with live_server(app) as url:
        c = client(url, "unused")  # local development mode: no keys exist
        reply = complete(c.chat.completions.create(model="tiny", messages=MSGS, max_tokens=3))
        c.completions.create(model="tiny", prompt="hi", max_tokens=2)
        with pytest.raises(openai.NotFoundError) as e:
            _post(c, {"request_id": reply.id, "type": "rating", "rating": 1})
        assert e.value.param == "request_id"
    store = Feedback()
    assert _count(store, RequestRecord) == 0 and _count(store, FeedbackRecord) == 0


def test_requests_are_logged_with_pii_redacted(served):
    reply = complete(served.a.chat.completions.create(model="tiny", messages=MSGS, max_tokens=4,
                                                      n=2, seed=1))
    rec = served.store.request(Caller(None, "t", admin=True, owner=True), reply.id)
    assert rec.kind == "chat" and rec.model == "tiny" and len(rec.choices) == 2
    stored = json.dumps([rec.prompt, rec.choices])
    assert EMAIL not in stored and "<EMAIL_1>" in stored
    assert [c["text"] for c in rec.choices] == [c.message.content for c in reply.choices]
    assert rec.info["redacted"] == {"EMAIL": 1}

    parts = served.a.chat.completions.create(model="tiny", messages=MSGS, max_tokens=4,
                                             stream=True)
    chunks = list(parts)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    rec = served.store.request(Caller(None, "t", admin=True, owner=True), chunks[0].id)
    assert rec.info["stream"] is True and rec.choices[0]["text"] == text

    cmpl = served.a.completions.create(model="tiny", prompt=["one", "two"], n=2, max_tokens=2)
    rec = served.store.request(Caller(None, "t", admin=True, owner=True), cmpl.id)
    assert rec.kind == "completion" and rec.prompt == ["one", "two"]
    assert [c["prompt_index"] for c in rec.choices] == [0, 0, 1, 1]

    resp = served.a.responses.create(model="tiny", input=f"mail {EMAIL}", max_output_tokens=3,
                                     instructions="be brief")
    rec = served.store.request(Caller(None, "t", admin=True, owner=True), resp.id)
    assert rec.kind == "response" and rec.prompt[0] == {"role": "system",
                                                        "content": "be brief"}
    assert EMAIL not in json.dumps(rec.prompt) and rec.choices[0]["text"] == resp.output_text


def test_feedback_kinds_scopes_and_audit(served):
    a, a2, b, admin = served.a, served.a2, served.b, served.admin
    one = a.chat.completions.create(model="tiny", messages=MSGS, max_tokens=3)
    two = a.chat.completions.create(model="tiny", messages=MSGS, max_tokens=3, n=2, seed=4)
    bobs = b.chat.completions.create(model="tiny", messages=MSGS, max_tokens=3)

    r = _post(a, {"request_id": one.id, "type": "rating", "rating": -1,
                  "reason": f"wrong, write to {EMAIL}"})
    assert r["object"] == "feedback" and r["rating"] == -1 and r["choice_index"] == 0
    assert EMAIL not in r["reason"] and "<EMAIL_1>" in r["reason"]  # free text redacted too
    fixed = _post(a2, {"request_id": one.id, "type": "correction", "correction": "Hello!"})
    assert fixed["type"] == "correction" and fixed["correction"] == "Hello!"  # same group
    pref = _post(a, {"request_id": two.id, "type": "preference", "preferred_index": 1})
    assert pref["preferred_index"] == 1 and pref["choice_index"] == 1
    _post(b, {"request_id": bobs.id, "type": "rating", "rating": 1})

    for body, param in [  # fields that do not fit the type or the request's choices: 400
        ({"request_id": one.id, "type": "preference", "preferred_index": 0}, "preferred_index"),
        ({"request_id": two.id, "type": "preference", "preferred_index": 2}, "preferred_index"),
        ({"request_id": one.id, "type": "rating"}, "rating"),
        ({"request_id": one.id, "type": "rating", "rating": 1, "correction": "x"}, "correction"),
        ({"request_id": one.id, "type": "rating", "rating": 1, "choice_index": 3},
         "choice_index"),
        ({"request_id": one.id, "type": "correction", "correction": "  "}, "correction"),
    ]:
        with pytest.raises(openai.BadRequestError) as e:
            _post(a, body)
        assert e.value.param == param, (body, e.value.body)

    with pytest.raises(openai.NotFoundError) as e:  # unknown id
        _post(a, {"request_id": "chatcmpl-nosuchthing", "type": "rating", "rating": 1})
    assert e.value.param == "request_id"
    with pytest.raises(openai.NotFoundError):  # another group's request: as unknown
        _post(b, {"request_id": one.id, "type": "rating", "rating": 1})
    with pytest.raises(openai.NotFoundError):
        _post(a, {"request_id": bobs.id, "type": "correction", "correction": "no"})

    mine = {f["id"] for f in _list(a)["data"]}
    assert mine == {r["id"], fixed["id"], pref["id"]} == {f["id"] for f in _list(a2)["data"]}
    assert {f["request_id"] for f in _list(b)["data"]} == {bobs.id}
    assert _list(b, request_id=one.id)["data"] == []  # not readable: nothing, not a leak
    assert len(_list(admin)["data"]) == 4
    page1 = _list(a, limit=2)
    assert len(page1["data"]) == 2 and page1["has_more"] is True
    page2 = _list(a, limit=2, after=page1["last_id"])
    assert len(page2["data"]) == 1 and page2["has_more"] is False
    assert [f["id"] for f in page1["data"] + page2["data"]] == [pref["id"], fixed["id"], r["id"]]
    assert {f["type"] for f in _list(a, type="correction")["data"]} == {"correction"}

    audited = [e for e in AuditLog().entries(100) if e.action == "POST /v1/feedback"]
    assert {e.object_id for e in audited if e.status == 200} == {
        r["id"], fixed["id"], pref["id"]} | {f["id"] for f in _list(b)["data"]}
    assert any(e.status == 404 and e.key_name == "bob" for e in audited)  # refused ones too


@pytest.mark.usefixtures("db_backend")
def test_retention_prunes_requests_and_their_feedback(home, monkeypatch):
    monkeypatch.setenv("AFINAR_LOG_RETENTION_DAYS", "2")
    reset_settings()
    store = Feedback()
    who = Caller("key-1", "alice", frozenset({"team-a"}))
    now = time.time()
    old = store.log_request(request_id="chatcmpl-old", kind="chat", model="tiny",
                            prompt=MSGS, choices=[{"index": 0, "text": "hi"}], who=who,
                            now=now - 3 * DAY)
    with pytest.raises(NotFound):  # past its retention: as absent, even before the prune
        store.add(who, old.id, "rating", rating=1)
    keep = store.log_request(request_id="chatcmpl-keep", kind="chat", model="tiny",
                             prompt=MSGS, choices=[{"index": 0, "text": "hi"}], who=who,
                             now=now - 1 * DAY)
    store.add(who, keep.id, "rating", rating=1)
    with store.db.session() as s:  # feedback given before the request aged out
        s.add(FeedbackRecord(id="fb-old", request_id=old.id, type="rating", rating=1,
                             choice_index=0, created_at=now - 3 * DAY, key_id="key-1",
                             key_name="alice", project_id="default", info={}))
    assert _count(store, RequestRecord) == 2 and _count(store, FeedbackRecord) == 2
    store.log_request(request_id="chatcmpl-new", kind="chat", model="tiny", prompt=MSGS,
                      choices=[{"index": 0, "text": "hi"}], who=who)  # logging prunes
    with store.db.session() as s:
        assert set(s.scalars(select(RequestRecord.id))) == {"chatcmpl-keep", "chatcmpl-new"}
        assert list(s.scalars(select(FeedbackRecord.request_id))) == ["chatcmpl-keep"]
    assert Settings(log_retention_days=0.5).log_retention_days == 0.5
    with pytest.raises(ValueError):
        Settings(log_retention_days=0)


# -- datasets ------------------------------------------------------------------------------------
WHO = Caller("key-1", "alice", frozenset({"team-a"}))


def _log(store, i: int, answers: list[str], prompt: str | None = None, kind: str = "chat",
         calls: bool = False):
    text = prompt or f"Question number {i}: what colour is item {i}?"
    choices = [{"index": j, "text": t, "prompt_index": 0} for j, t in enumerate(answers)]
    if calls:
        choices[0]["tool_calls"] = [{"id": "c1", "type": "function",
                                     "function": {"name": "f", "arguments": "{}"}}]
    return store.log_request(request_id=f"chatcmpl-{i}-{len(answers)}-{kind}", kind=kind,
                             model="tiny", who=WHO, choices=choices,
                             prompt=[text] if kind == "completion" else
                             [{"role": "user", "content": text}])


@pytest.fixture
def feedback(home):
    """12 requests with feedback of every type, plus items each export must drop."""
    store = Feedback()
    for i in range(12):
        one = _log(store, i, [f"Item {i} is red.", f"Item {i} is blue, clearly."])
        store.add(WHO, one.id, "preference", preferred_index=1)
        store.add(WHO, one.id, "correction", correction=f"Item {i} is green.")
        store.add(WHO, one.id, "rating", rating=1 if i % 2 else -1, choice_index=i % 2)
    # the same prompt asked twice, rated both ways: one DPO pair from two ratings
    up = _log(store, 100, ["Paris."], prompt="Capital of France?")
    down = _log(store, 101, ["Lyon."], prompt="Capital of France?")
    store.add(WHO, up.id, "rating", rating=1)
    store.add(WHO, down.id, "rating", rating=-1)
    # a duplicate correction (same prompt and answer as request 0's)
    dup = _log(store, 0, ["Item 0 is red!"], prompt="Question number 0: what colour is item 0?")
    store.add(WHO, dup.id, "correction", correction="Item 0 is green.")
    # conflicting ratings of one answer (kto drops both); a tool-call answer; a text completion
    clash = _log(store, 200, ["Maybe."])
    store.add(WHO, clash.id, "rating", rating=1)
    store.add(WHO, clash.id, "rating", rating=-1)
    tool = _log(store, 300, ["", "x"], calls=True)
    store.add(WHO, tool.id, "rating", rating=1)
    text = _log(store, 400, ["done"], kind="completion")
    store.add(WHO, text.id, "rating", rating=1)
    same = _log(store, 500, ["Same answer."])
    store.add(WHO, same.id, "correction", correction="Same answer.")
    return store


@pytest.mark.usefixtures("db_backend")
def test_dpo_export_passes_the_validator(feedback, tmp_path):
    s = export("dpo", feedback.items(WHO), tmp_path / "dpo.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "dpo.jsonl").read_text().splitlines()]
    assert validate_file(tmp_path / "dpo.jsonl", expected_format="preference").ok
    assert all(set(r) == {"input", "preferred_output", "non_preferred_output"} for r in rows)
    # 12 preferences + 13 corrections (one a duplicate) + 1 pair of ratings
    assert s.examples == 12 + 13 + 1 and s.duplicates == 1 and s.written == {"train": 25}
    assert {"input": {"messages": [{"role": "user", "content": "Capital of France?"}]},
            "preferred_output": [{"role": "assistant", "content": "Paris."}],
            "non_preferred_output": [{"role": "assistant", "content": "Lyon."}]} in rows
    assert s.dropped["no opposite rating for the same prompt"] == 12 + 2  # clash: same answer
    assert s.dropped["text completion (no chat prompt)"] == 1
    assert s.dropped["the answer is a tool call"] == 1
    assert s.dropped["preferred and rejected answers are identical"] == 1
    assert s.used + sum(s.dropped.values()) == s.feedback


@pytest.mark.usefixtures("db_backend")
def test_kto_and_sft_exports_pass_the_validator(feedback, tmp_path):
    k = export("kto", feedback.items(WHO), tmp_path / "kto.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "kto.jsonl").read_text().splitlines()]
    assert all(set(r) == {"messages", "completion", "label"} and isinstance(r["label"], bool)
               for r in rows)
    assert sorted(r["label"] for r in rows).count(True) == 6 + 1  # odd i, and Paris
    assert len(rows) == k.written["train"] == 12 + 2
    assert k.dropped["conflicting ratings for the same answer"] == 2
    assert k.dropped["a correction, not a rating (kto uses ratings)"] == 14
    assert k.dropped["a preference, not a rating (kto uses ratings)"] == 12

    s = export("sft", feedback.items(WHO), tmp_path / "sft.jsonl", split=0.25, seed=3)
    assert set(s.paths) == {"train", "val"} and not (tmp_path / "sft.jsonl").exists()
    train, val = tmp_path / "sft.train.jsonl", tmp_path / "sft.val.jsonl"
    assert validate_file(train, expected_format="chat").ok
    assert validate_file(val, expected_format="chat", role="validation").ok
    assert s.written == {"train": 10, "val": 3} and s.duplicates == 1  # 14 corrections, 1 dup
    assert s.dropped == {"a rating, not a correction (sft uses corrections)": 17,
                         "a preference, not a correction (sft uses corrections)": 12,
                         "text completion (no chat prompt)": 1}
    texts = train.read_text() + val.read_text()
    assert texts.count('"Item 0 is green."') == 1


@pytest.mark.usefixtures("db_backend")
def test_an_export_too_small_to_train_on_writes_nothing(home, tmp_path):
    store = Feedback()
    for i in range(3):
        store.add(WHO, _log(store, i, ["a"]).id, "correction", correction=f"fixed {i}")
    with pytest.raises(InvalidRequest, match="does not pass validation"):
        export("sft", store.items(WHO), tmp_path / "sft.jsonl")
    assert not (tmp_path / "sft.jsonl").exists()
    with pytest.raises(InvalidRequest, match="no dpo example"):
        export("dpo", [], tmp_path / "dpo.jsonl")
    rows, summary = build("kto", store.items(WHO))
    assert rows == [] and summary.dropped == {
        "a correction, not a rating (kto uses ratings)": 3}


@pytest.mark.usefixtures("db_backend")
def test_feedback_is_scoped_by_project_and_groups(home):
    store = Feedback()
    alice, ann = WHO, Caller("key-2", "ann", frozenset({"team-a"}))
    bob = Caller("key-3", "bob", frozenset({"team-b"}))
    other = Caller("key-4", "olga", frozenset({"team-a"}), project="other")
    rec = _log(store, 1, ["x"])
    add_feedback(store, ann, rec.id, "rating", rating=1)
    for who in (bob, other):
        with pytest.raises(NotFound):
            add_feedback(store, who, rec.id, "rating", rating=1)
        assert store.items(who) == []
    assert len(store.items(alice)) == 1
    assert len(store.items(Caller("key-9", "root", admin=True))) == 1  # project admin


def test_cli_add_list_export(feedback, capsys, tmp_path, monkeypatch):
    from afinar.cli.common import console

    monkeypatch.setattr(console, "width", 80)  # tables readable at 80 columns
    rec = _log(feedback, 900, ["An answer."])
    code, out, err = run_cli(capsys, "feedback", "add", rec.id, "--rating", "down",
                             "--reason", "too short")
    assert code == 0 and out.startswith("fb-") and "rating on " + rec.id in out
    code, out, err = run_cli(capsys, "feedback", "add", rec.id, "--rating", "+1",
                             "--correction", "x")
    assert code == 2 and err.startswith("error: give exactly one of")
    code, out, err = run_cli(capsys, "feedback", "add", "chatcmpl-none", "--rating", "up")
    assert code == 2 and "no logged request" in err
    code, out, err = run_cli(capsys, "feedback", "list", "--request", rec.id, "--json")
    assert code == 0 and [f["reason"] for f in json.loads(out)] == ["too short"]
    code, out, err = run_cli(capsys, "feedback", "list")
    assert code == 0 and rec.id in out and all(len(line) <= 80 for line in out.splitlines())

    dest = tmp_path / "out" / "pairs.jsonl"
    code, out, err = run_cli(capsys, "feedback", "export", "--as", "dpo", "--out", str(dest),
                             "--split", "0.2", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["written"]["train"] + s["written"]["val"] == 25
    assert s["paths"]["val"] == str(tmp_path / "out" / "pairs.val.jsonl")
    code, out, err = run_cli(capsys, "feedback", "export", "--as", "sft", "--out",
                             str(tmp_path / "s.jsonl"))
    assert code == 0 and "dropped: a rating, not a correction" in out
    assert "written: " in out and "duplicates removed" in out
    assert f"train: {tmp_path / 's.jsonl'}" in out.splitlines()
    assert all(len(line) <= 80 for line in out.splitlines() if str(tmp_path) not in line), out
    code, out, err = run_cli(capsys, "feedback", "export", "--as", "rlhf")
    assert code == 2 and err.startswith("error: --as must be one of dpo, kto, sft")



@pytest.fixture
def log_on(monkeypatch):
    monkeypatch.setenv("AFINAR_LOG_REQUESTS", "on")
    reset_settings()


def test_grounded_answers_are_marked_in_the_log(log_on, server, tmp_path):  # noqa: F811
    """A file_search answer (chat, streamed chat, responses) is logged with ``grounded``: the
    drift monitor's "not in the sources" share counts those answers; a plain chat is not."""
    _, _, c = server
    store = c.vector_stores.create(name="kb", file_ids=[upload(
        tmp_path, "wifi.md", "# Wi-Fi\n\nHold the reset button for ten seconds.\n")])
    tool = {"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 1}
    ask = [{"role": "user", "content": "How do I reset the Wi-Fi?"}]
    ids = [c.chat.completions.create(model="tiny", messages=ask, tools=[tool], max_tokens=3).id,
           c.responses.create(model="tiny", input=ask, tools=[tool], max_output_tokens=3).id]
    stream = c.chat.completions.create(model="tiny", messages=ask, tools=[tool], max_tokens=3,
                                       stream=True)
    ids.append(next(iter(stream)).id)
    for _ in stream:  # the log is written when the stream ends
        pass
    plain = c.chat.completions.create(model="tiny", messages=ask, max_tokens=3).id
    admin = Caller(None, "t", admin=True, owner=True)
    for i in ids:
        assert Feedback().request(admin, i).info.get("grounded") is True, i
    assert "grounded" not in Feedback().request(admin, plain).info
