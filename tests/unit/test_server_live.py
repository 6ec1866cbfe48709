"""The server as users meet it: a real uvicorn on a free loopback port, driven by the official
``openai`` SDK with API keys. Every object the SDK parses is checked for the fields its type
requires (``tests.live_server.complete``). Flows: upload -> fine-tune (tiny model, a real job
run by the worker in this process) -> events -> chat with the ``ft:`` id -> delete; vector
store -> upload -> search -> grounded chat with citations, with two keys of different groups;
streaming; error cases."""

from __future__ import annotations

import json
import re
import shutil
from types import SimpleNamespace
from typing import ClassVar

import openai
import pytest
from openai.types.chat import ChatCompletion
from openai.types.responses.response_output_text import AnnotationFileCitation

from afinar.models import Catalog, GenerationResult
from afinar.server.app import create_app
from afinar.store.keys import ApiKeys
from afinar.tuning import run_worker
from tests.live_server import NO_KEY, client, complete, live_server, required_missing

MSGS = [{"role": "user", "content": "hello world"}]


def chat_rows(n: int) -> str:
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                            {"role": "assistant", "content": "Red and blue."}]})
                   + "\n" for i in range(n))


@pytest.fixture
def live(home, tiny_model_template, tmp_path):
    """A server with three keys: ``admin`` (no groups), ``a`` (team-a), ``b`` (team-b)."""
    model = shutil.copytree(tiny_model_template, tmp_path / "tiny")
    cfg = json.loads((model / "config.json").read_text())
    cfg["max_position_embeddings"] = 2048  # room for a grounding prompt (rotary: no weights)
    (model / "config.json").write_text(json.dumps(cfg))
    Catalog().add("tiny", model)
    keys = ApiKeys()
    secrets = {"admin": keys.create("admin", admin=True)[1],
               "a": keys.create("alice", "team-a")[1], "b": keys.create("bob", "team-b")[1]}
    app = create_app()
    assert app.state.auth  # keys exist: every request needs one
    app.state.spawn_workers = False  # the test runs the worker itself
    with live_server(app) as url:
        yield SimpleNamespace(url=url, app=app, **{k: client(url, v) for k, v in secrets.items()})


def test_finetune_flow(live):
    """upload -> fine-tune -> events -> chat with the ft: id -> delete, as a user key; deleting
    the model takes the admin key."""
    user, other, admin = live.a, live.b, live.admin
    train = complete(user.files.create(file=("train.jsonl", chat_rows(24).encode()),
                                       purpose="fine-tune"))
    assert train.purpose == "fine-tune" and train.bytes > 0
    job = complete(user.fine_tuning.jobs.create(
        model="tiny", training_file=train.id, suffix="live", seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 2}}}))
    assert job.status == "validating_files" and job.model == "tiny"
    spare = complete(user.fine_tuning.jobs.create(model="tiny", training_file=train.id))
    paused = user.fine_tuning.jobs.pause(spare.id)  # OpenAI's own example answers "paused",
    assert paused.status == "paused" and not required_missing(paused)  # not in its enum
    assert complete(user.fine_tuning.jobs.resume(spare.id)).status == "queued"
    assert complete(user.fine_tuning.jobs.cancel(spare.id)).status == "cancelled"
    with pytest.raises(openai.NotFoundError) as e:  # bob cannot train on alice's file
        other.fine_tuning.jobs.create(model="tiny", training_file=train.id)
    assert e.value.param == "training_file"

    assert run_worker(exit_when_idle=True, log=lambda m: None) == 1  # the real job, here
    done = complete(user.fine_tuning.jobs.retrieve(job.id))
    assert done.status == "succeeded", done.error
    ft = done.fine_tuned_model
    assert ft == f"ft:tiny:afinar:live:{job.id[-8:]}" and done.trained_tokens > 0
    assert {j.id for j in complete(user.fine_tuning.jobs.list())} == {job.id, spare.id}
    events = complete(user.fine_tuning.jobs.list_events(job.id, limit=100))
    assert events.data[-1].message.startswith("Created fine-tuning job")  # newest first
    assert any(e.type == "metrics" and "train_loss" in e.data for e in events.data)
    assert any(e.message.startswith("New fine-tuned model created") for e in events.data)
    ckpt = complete(user.fine_tuning.jobs.checkpoints.list(job.id)).data[0]
    assert ckpt.fine_tuning_job_id == job.id and ckpt.step_number == 3
    results = done.result_files[0]  # the metrics CSV belongs to the training file's uploader
    assert user.files.content(results).text.startswith("step,train_loss")
    with pytest.raises(openai.NotFoundError):
        other.files.content(results)

    model = complete(user.models.retrieve(ft))
    assert model.id == ft and model.object == "model"
    reply = complete(user.chat.completions.create(model=ft, messages=MSGS, max_tokens=4,
                                                  temperature=0))
    assert reply.model == ft and reply.choices[0].message.role == "assistant"
    assert 1 <= reply.usage.completion_tokens <= 4

    with pytest.raises(openai.PermissionDeniedError) as e:
        user.models.delete(ft)
    assert e.value.code == "permission_denied" and e.value.body["type"] == "permission_error"
    assert complete(admin.models.delete(ft)).deleted is True
    with pytest.raises(openai.NotFoundError):
        user.models.retrieve(ft)
    with pytest.raises(openai.NotFoundError):
        user.chat.completions.create(model=ft, messages=MSGS, max_tokens=2)


DOCS = {  # name -> (uploader, text, attributes)
    "alpha.md": ("a", ("# Alpha\n\nThe alpha vault code is 4711. The alpha team runs the wifi "
                       "router.\n"), None),
    "beta.md": ("b", ("# Beta\n\nThe beta vault code is 9902. The beta team runs the wifi "
                      "router.\n"), None),
    "ops.md": ("admin", "# Ops\n\nThe ops vault code is 5555. Ops runs the wifi router.\n",
               {"groups": "team-b"}),
    "public.txt": ("admin", ("Everyone may know that the wifi router sits in the hall and that "
                             "no vault code is written on it.\n"), {"groups": ""}),
}
SECRETS = {"alpha.md": "4711", "beta.md": "9902", "ops.md": "5555"}


def _store_with_documents(live) -> tuple[str, dict[str, str]]:
    """One store; each document added by its uploader, ``ops.md`` restricted to team-b with
    the ``groups`` attribute although an admin (no groups) uploaded it."""
    ids = {}
    for name, (who, text, _) in DOCS.items():
        f = complete(getattr(live, who).files.create(file=(name, text.encode()),
                                                     purpose="assistants"))
        ids[name] = f.id
    store = complete(live.a.vector_stores.create(name="kb", file_ids=[ids["alpha.md"]]))
    assert store.file_counts.completed == 1
    for name, (who, _, attrs) in DOCS.items():
        if name != "alpha.md":
            vf = getattr(live, who).vector_stores.files.create(
                vector_store_id=store.id, file_id=ids[name], attributes=attrs)
            assert complete(vf).status == "completed", vf.last_error
    return store.id, ids


def _visible(live) -> dict[str, set[str]]:
    return {"a": {"alpha.md", "public.txt"}, "b": {"beta.md", "ops.md", "public.txt"},
            "admin": set(DOCS)}


def test_vector_store_acl_search_and_listing(live):
    store, ids = _store_with_documents(live)
    name_of = {v: k for k, v in ids.items()}
    for who, visible in _visible(live).items():
        c = getattr(live, who)
        for query in ("vault code wifi router", "4711 9902 5555", "ops beta alpha team"):
            page = complete(c.vector_stores.search(store, query=query, max_num_results=10))
            found = {name_of[r.file_id] for r in page.data}
            assert found <= visible, (who, query, found)
            texts = " ".join(r.content[0].text for r in page.data)
            for name, code in SECRETS.items():
                assert (code in texts) <= (name in visible), (who, query, name)
        page = complete(c.vector_stores.search(store, query="vault code wifi router"))
        assert {name_of[r.file_id] for r in page.data} == visible  # and all it may see
        listed = complete(c.vector_stores.files.list(vector_store_id=store))
        assert {name_of[f.id] for f in listed.data} == visible
        assert complete(c.vector_stores.retrieve(store)).file_counts.total == len(visible)
    # another group's document does not exist for a key: 404 everywhere
    for op in (lambda: live.a.vector_stores.files.retrieve(ids["beta.md"], vector_store_id=store),
               lambda: live.a.vector_stores.files.content(ids["ops.md"], vector_store_id=store),
               lambda: live.a.vector_stores.files.update(ids["beta.md"], vector_store_id=store,
                                                         attributes={"groups": "team-a"}),
               lambda: live.a.vector_stores.files.delete(ids["beta.md"], vector_store_id=store),
               lambda: live.a.vector_stores.files.create(vector_store_id=store,
                                                         file_id=ids["beta.md"]),
               lambda: live.a.files.retrieve(ids["beta.md"]),
               lambda: live.a.files.content(ids["beta.md"]),
               lambda: live.a.files.delete(ids["beta.md"]),
               lambda: live.a.files.content(ids["ops.md"])):  # an admin's upload, team-b's
        with pytest.raises(openai.NotFoundError):
            op()
    # the files API has the same readers as retrieval (afinar.store.access)
    assert {f.id for f in complete(live.a.files.list())} == {ids[n] for n in _visible(live)["a"]}
    assert {f.id for f in complete(live.b.files.list())} == {ids[n] for n in _visible(live)["b"]}
    assert live.a.files.content(ids["public.txt"]).text == DOCS["public.txt"][1]
    assert set(ids.values()) <= {f.id for f in complete(live.admin.files.list())}
    assert live.b.files.content(ids["beta.md"]).text == DOCS["beta.md"][1]
    # a key may only restrict documents to its own groups
    with pytest.raises(openai.PermissionDeniedError):
        live.a.vector_stores.files.update(ids["alpha.md"], vector_store_id=store,
                                          attributes={"groups": "team-b"})
    # the groups attribute changes a file's groups (its uploader keeps reading it); leaving it
    # out of an update changes nothing
    def finds(c, name):
        hits = c.vector_stores.search(store, query="vault code team", max_num_results=10).data
        return ids[name] in {h.file_id for h in hits}

    moved = complete(live.admin.vector_stores.files.update(
        ids["alpha.md"], vector_store_id=store, attributes={"groups": "team-b", "n": 1}))
    assert moved.attributes == {"groups": "team-b", "n": 1}
    assert finds(live.b, "alpha.md") and finds(live.a, "alpha.md")
    kept = live.admin.vector_stores.files.update(ids["alpha.md"], vector_store_id=store,
                                                 attributes={})
    assert kept.attributes == {"groups": "team-b"} and finds(live.b, "alpha.md")
    assert not finds(live.a, "ops.md")
    live.admin.vector_stores.files.update(ids["ops.md"], vector_store_id=store,
                                          attributes={"groups": ""})
    assert finds(live.a, "ops.md") and finds(live.b, "ops.md")  # made public by an admin


class Quoting:
    """Stands in for the model in grounded answers: records the prompt it is given and answers
    with the alpha sentence citing the source number the prompt gave alpha.md (a model
    citing its sources; the tiny random model cannot)."""

    prompts: ClassVar[list[str]] = []

    def __init__(self, lm):
        pass

    def chat(self, messages, params=None):
        prompt = "\n".join(m["content"] for m in messages)  # wherever the layout puts them
        Quoting.prompts.append(prompt)
        m = re.search(r"\[(\d+)\] from alpha\.md", prompt)
        text = f"The alpha vault code is 4711 [{m.group(1)}]." if m else "I do not know."
        return GenerationResult(text, "stop", 100, 9, 0)


def test_grounded_chat_and_responses_respect_groups(live, monkeypatch):
    store, ids = _store_with_documents(live)
    monkeypatch.setattr("afinar.server.routes_responses.Generator", Quoting)
    Quoting.prompts.clear()
    tool = {"type": "file_search", "vector_store_ids": [store], "max_num_results": 10}
    question = [{"role": "user", "content": "What are the vault codes for the wifi router?"}]

    # afinar's extension: file_citation annotations on a chat message have the Responses
    # API's shape, which ChatCompletion's own type (url_citation only) does not know
    chat = live.a.chat.completions.create(model="tiny", messages=question, tools=[tool])
    raw = chat.model_dump(mode="json", exclude_unset=True)
    ann = [AnnotationFileCitation.model_validate(a)
           for a in raw["choices"][0]["message"].pop("annotations")]
    complete(ChatCompletion.construct(**raw))  # the rest: ChatCompletion's required fields
    msg = chat.choices[0].message
    assert msg.content.startswith("The alpha vault code is 4711")
    assert [(a.type, a.file_id, a.filename) for a in ann] == [
        ("file_citation", ids["alpha.md"], "alpha.md")]
    assert ann[0].index == len(msg.content)
    prompt = Quoting.prompts[-1]
    assert "4711" in prompt and "9902" not in prompt and "5555" not in prompt

    chunks = list(live.a.chat.completions.create(model="tiny", messages=question, tools=[tool],
                                                 stream=True))
    for c in chunks:
        complete(c)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == msg.content

    resp = complete(live.b.responses.create(model="tiny", input=question[0]["content"],
                                            tools=[tool], include=["file_search_call.results"]))
    call, out = resp.output
    assert {r.file_id for r in call.results} == {ids[n] for n in _visible(live)["b"]}
    assert "4711" not in " ".join(r.text for r in call.results)
    assert "4711" not in Quoting.prompts[-1] and "9902" in Quoting.prompts[-1]
    assert out.content[0].text == "I do not know."  # alpha.md was never shown to bob's model
    assert {a.file_id for a in out.content[0].annotations} <= {ids[n] for n in
                                                               _visible(live)["b"]}

    resp = complete(live.admin.responses.create(model="tiny", input=question[0]["content"],
                                                tools=[tool],
                                                include=["file_search_call.results"]))
    assert {r.file_id for r in resp.output[0].results} == set(ids.values())
    assert resp.output[1].content[0].annotations[0].file_id == ids["alpha.md"]


def test_streaming_and_core_endpoints(live):
    c = live.a
    models = complete(c.models.list())
    assert {"tiny", "all-minilm-l6-v2"} <= {m.id for m in models.data}
    plain = complete(c.chat.completions.create(model="tiny", messages=MSGS, max_tokens=6,
                                               temperature=0, seed=1))
    chunks = list(c.chat.completions.create(model="tiny", messages=MSGS, max_tokens=6,
                                            temperature=0, seed=1, stream=True,
                                            stream_options={"include_usage": True}))
    for ch in chunks:
        complete(ch)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == plain.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == \
        plain.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert len({ch.id for ch in chunks}) == 1

    comp = complete(c.completions.create(model="tiny", prompt="Once upon", max_tokens=4,
                                         temperature=0))
    streamed = list(c.completions.create(model="tiny", prompt="Once upon", max_tokens=4,
                                         temperature=0, stream=True))
    for ch in streamed:  # OpenAI streams finish_reason null until the end, as here; the SDK
        assert not required_missing(ch)  # reuses Completion, whose type forbids null there
    complete(streamed[-1])
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices) == comp.choices[0].text

    emb = complete(c.embeddings.create(model="all-minilm-l6-v2", input=["wifi", "router"]))
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 384

    f = complete(c.files.create(file=("notes.md", b"# Notes\n\nThe wifi router is blue.\n"),
                                purpose="assistants"))
    assert complete(c.files.retrieve(f.id)).filename == "notes.md"
    store = complete(c.vector_stores.create(name="notes", metadata={"team": "a"}))
    batch = complete(c.vector_stores.file_batches.create(vector_store_id=store.id,
                                                         file_ids=[f.id]))
    assert batch.status == "completed" and batch.file_counts.completed == 1
    assert complete(c.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id))
    assert complete(c.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id))
    assert [x.id for x in complete(c.vector_stores.file_batches.list_files(
        batch.id, vector_store_id=store.id))] == [f.id]
    vf = complete(c.vector_stores.files.retrieve(f.id, vector_store_id=store.id))
    assert vf.status == "completed" and vf.usage_bytes > 0
    assert complete(c.vector_stores.files.update(f.id, vector_store_id=store.id,
                                                 attributes={"kind": "note"})).attributes == {
        "kind": "note"}
    content = c.vector_stores.files.content(f.id, vector_store_id=store.id)
    assert "blue" in " ".join(p.text for p in content)
    assert complete(c.vector_stores.update(store.id, name="renamed")).name == "renamed"
    assert store.id in {s.id for s in complete(c.vector_stores.list())}
    assert complete(c.vector_stores.files.delete(f.id, vector_store_id=store.id)).deleted
    assert complete(c.vector_stores.delete(store.id)).deleted
    assert complete(c.files.delete(f.id)).deleted
    plain_resp = complete(c.responses.create(model="tiny", input="hi", max_output_tokens=3))
    assert [o.type for o in plain_resp.output] == ["message"]


def test_error_cases(live, tmp_path):
    from afinar.data.validate import validate_file

    with pytest.raises(openai.NotFoundError) as e:
        live.a.chat.completions.create(model="no-such-model", messages=MSGS)
    assert e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        live.a.models.retrieve("no-such-model")

    bad = b'{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n'
    with pytest.raises(openai.BadRequestError) as e:
        live.a.files.create(file=("bad.jsonl", bad), purpose="fine-tune")
    (tmp_path / "bad.jsonl").write_bytes(bad)
    report = validate_file(tmp_path / "bad.jsonl")
    assert e.value.code == "invalid_file" and e.value.param == "file"
    assert report.errors and all(str(err) in e.value.message for err in report.errors)
    assert not complete(live.a.files.list()).data  # a refused upload is not kept

    with pytest.raises(openai.AuthenticationError) as e:
        client(live.url, "sk-afinar-wrong").models.list()
    assert e.value.code == "invalid_api_key" and e.value.body["type"] == "authentication_error"
    for call in (lambda: live.a.models.list(extra_headers=NO_KEY),
                 lambda: live.a.chat.completions.create(model="tiny", messages=MSGS,
                                                        extra_headers=NO_KEY),
                 lambda: live.a.files.list(extra_headers=NO_KEY)):
        with pytest.raises(openai.AuthenticationError) as e:
            call()
        assert e.value.code == "missing_api_key" and "Authorization: Bearer" in e.value.message
    import httpx

    assert httpx.get(live.url + "/health").json()["status"] == "ok"  # the one open route


def test_complete_fails_on_a_missing_or_mistyped_required_field():
    """The check above can fail: an SDK object built leniently (as the SDK does from JSON)
    without a required field, or with a wrongly typed one, is refused."""
    from openai.types import FileObject

    raw = {"id": "file-1", "object": "file", "bytes": 3, "created_at": 1, "filename": "a",
           "purpose": "assistants", "status": "processed"}
    complete(FileObject.construct(**raw))
    missing = {k: v for k, v in raw.items() if k != "bytes"}
    assert required_missing(FileObject.construct(**missing)) == ["bytes"]
    with pytest.raises(Exception, match="bytes"):
        complete(FileObject.construct(**missing))
    with pytest.raises(Exception, match="created_at"):
        complete(FileObject.construct(**{**raw, "created_at": "yesterday"}))
