"""The OpenAI SDK against afinar's server: fine-tuning jobs (create, list, events, checkpoints,
cancel, pause, resume, errors), vector stores (files, batches, search with filters, deletion)
and ``responses.create`` with the file_search tool, on the tiny model and MiniLM."""

import json
import shutil

import openai
import pytest
from fastapi.testclient import TestClient
from openai.types.responses import Response

from afinar.models import Catalog, GenerationResult, SamplingParams
from afinar.rag.kb import KnowledgeBases
from afinar.server.app import create_app
from afinar.store.files import Files
from afinar.tuning import run_worker

DOCS = {
    "wifi.md": "# Wi-Fi\n\nTo reset the router's Wi-Fi, hold the reset button for ten seconds. "
               "The light turns blue when it is ready.\n",
    "billing.txt": "Invoices are sent on the first day of each month. You can pay by card or "
                   "bank transfer.\n",
    "blob.bin": "\x00\x01 not a document",
}


@pytest.fixture
def server(home, tiny_model_template, tmp_path):
    model = shutil.copytree(tiny_model_template, tmp_path / "tiny")
    cfg = json.loads((model / "config.json").read_text())
    cfg["max_position_embeddings"] = 2048  # room for the grounding prompt (rotary: no weights)
    (model / "config.json").write_text(json.dumps(cfg))
    Catalog().add("tiny", model)
    app = create_app(auth=False)
    app.state.spawn_workers = False
    with TestClient(app) as http:
        yield app, http, openai.OpenAI(base_url="http://testserver/v1", api_key="x",
                                       http_client=http, max_retries=0)


def upload(tmp_path, name, content, purpose="assistants"):
    p = tmp_path / name
    p.write_text(content)
    return Files().create_from_path(p, purpose).id


def chat_rows(n):
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                            {"role": "assistant", "content": "Red and blue."}]})
                   + "\n" for i in range(n))


def test_fine_tuning_jobs_through_the_sdk(server, tmp_path):
    _, http, client = server
    train = upload(tmp_path, "train.jsonl", chat_rows(24), "fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=train, suffix="api", seed=7, metadata={"team": "a"},
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 2}}})
    assert job.status == "validating_files" and job.method.type == "supervised"
    assert job.hyperparameters.n_epochs == 1 and job.seed == 7 and job.metadata == {"team": "a"}
    old = client.fine_tuning.jobs.create(model="tiny", training_file=train,
                                         hyperparameters={"n_epochs": 2, "batch_size": "auto"})
    assert old.hyperparameters.n_epochs == 2 and old.hyperparameters.batch_size == "auto"
    assert client.fine_tuning.jobs.cancel(old.id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(old.id)
    third = client.fine_tuning.jobs.create(model="tiny", training_file=train,
                                           method={"type": "dora", "dora": {"r": 4}})
    assert third.method.afinar["method"] == "dora"  # afinar's extension of method
    assert client.fine_tuning.jobs.pause(third.id).status == "paused"
    assert client.fine_tuning.jobs.resume(third.id).status == "queued"
    client.fine_tuning.jobs.cancel(third.id)

    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "a"})] == [job.id]
    first = client.fine_tuning.jobs.list(limit=1)
    assert first.has_more and len(first.data) == 1
    assert {j.id for j in client.fine_tuning.jobs.list(limit=1)} == {job.id, old.id, third.id}

    run_worker(exit_when_idle=True, log=lambda m: None)
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny:afinar:api:{job.id[-8:]}" and done.trained_tokens
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=2))  # SDK pagination
    assert len(events) > 4 and len({e.id for e in events}) == len(events)
    assert events[-1].message.startswith("Created fine-tuning job")  # newest first
    assert any(e.type == "metrics" and "train_loss" in e.data for e in events)
    ckpts = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert ckpts and ckpts[0].fine_tuned_model_checkpoint.startswith("ft:tiny:afinar:api:")
    assert ckpts[0].fine_tuning_job_id == job.id and ckpts[0].step_number == 3

    with pytest.raises(openai.NotFoundError) as e:
        client.fine_tuning.jobs.create(model="tiny", training_file="file-nope")
    assert e.value.param == "training_file" and e.value.body["type"] == "invalid_request_error"
    for hp, param in (({"n_epochs": 0}, "hyperparameters.n_epochs"),
                      ({"n_epochs": "many"}, "hyperparameters.n_epochs"),
                      ({"epochs": 3}, "hyperparameters.epochs")):
        with pytest.raises(openai.BadRequestError) as e:
            client.fine_tuning.jobs.create(model="tiny", training_file=train, hyperparameters=hp)
        assert e.value.param == param
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(model="tiny", training_file=train,
                                       method={"type": "reinforcement"})
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    r = http.post("/v1/fine_tuning/jobs", json={"model": "tiny"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"


def test_vector_stores_through_the_sdk(server, tmp_path):
    _, _, client = server
    ids = {name: upload(tmp_path, name, text) for name, text in DOCS.items()}
    store = client.vector_stores.create(name="Support", metadata={"team": "care"},
                                        expires_after={"anchor": "last_active_at", "days": 7})
    assert store.name == "Support" and store.status == "completed" and store.metadata == {
        "team": "care"} and store.file_counts.total == 0
    assert store.expires_at == store.last_active_at + 7 * 86400
    f = client.vector_stores.files.create(vector_store_id=store.id, file_id=ids["wifi.md"],
                                          attributes={"topic": "network", "year": 2026})
    assert f.id == ids["wifi.md"] and f.status == "completed" and f.usage_bytes > 0
    assert f.attributes == {"topic": "network", "year": 2026}
    assert f.chunking_strategy.type == "static"
    batch = client.vector_stores.file_batches.create(
        vector_store_id=store.id, files=[
            {"file_id": ids["billing.txt"], "attributes": {"topic": "billing", "year": 2025}},
            {"file_id": ids["blob.bin"]}])
    assert batch.status == "completed" and batch.file_counts.completed == 1
    assert batch.file_counts.failed == 1 and batch.file_counts.total == 2
    assert client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id).status \
        == "completed"
    in_batch = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    assert {x.id for x in in_batch} == {ids["billing.txt"], ids["blob.bin"]}
    failed = client.vector_stores.files.list(store.id, filter="failed").data
    assert [x.id for x in failed] == [ids["blob.bin"]]
    assert failed[0].last_error.code == "unsupported_file"
    store = client.vector_stores.retrieve(store.id)
    assert store.file_counts.completed == 2 and store.usage_bytes > 0
    content = client.vector_stores.files.content(ids["wifi.md"], vector_store_id=store.id)
    assert "reset button" in content.data[0].text

    hits = client.vector_stores.search(store.id, query="how do I reset the wifi router").data
    assert hits[0].file_id == ids["wifi.md"] and hits[0].filename == "wifi.md"
    assert "reset button" in hits[0].content[0].text and hits[0].attributes["year"] == 2026
    assert 0 < hits[0].score <= 1
    billing = client.vector_stores.search(store.id, query="how do I reset the wifi router",
                                          filters={"type": "eq", "key": "topic",
                                                   "value": "billing"}).data
    assert {h.file_id for h in billing} == {ids["billing.txt"]}
    both = client.vector_stores.search(store.id, query=["wifi reset", "invoices"], filters={
        "type": "and", "filters": [{"type": "gte", "key": "year", "value": 2025},
                                   {"type": "in", "key": "topic",
                                    "value": ["network", "billing"]}]})
    assert {h.file_id for h in both} == {ids["wifi.md"], ids["billing.txt"]}
    assert not client.vector_stores.search(store.id, query="wifi",
                                           ranking_options={"score_threshold": 0.99}).data
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.search(store.id, query="wifi", filters={"type": "like"})

    # local development mode (no keys) acts as an admin: documents restricted to groups with
    # the CLI are found and listed too (keys and groups: tests/unit/test_server_auth.py)
    secret = tmp_path / "secret.md"
    secret.write_text("# Router\n\nThe router admin password is hunter2 for the wifi reset.\n")
    KnowledgeBases().add(store.id, [secret], groups=["staff"])
    hits = client.vector_stores.search(store.id, query="router admin password wifi").data
    assert "hunter2" in " ".join(h.content[0].text for h in hits)
    assert client.vector_stores.retrieve(store.id).file_counts.total == 4

    f = client.vector_stores.files.update(ids["wifi.md"], vector_store_id=store.id,
                                          attributes={"topic": "net2"})
    assert f.attributes == {"topic": "net2"}
    assert client.vector_stores.update(store.id, name="Helpdesk").name == "Helpdesk"
    assert store.id in [s.id for s in client.vector_stores.list()]
    gone = client.vector_stores.files.delete(ids["wifi.md"], vector_store_id=store.id)
    assert gone.deleted and gone.object == "vector_store.file.deleted"
    hits = client.vector_stores.search(store.id, query="how do I reset the wifi router").data
    assert ids["wifi.md"] not in {h.file_id for h in hits}
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(ids["wifi.md"], vector_store_id=store.id)
    with pytest.raises(openai.NotFoundError) as e:
        client.vector_stores.files.create(vector_store_id=store.id, file_id="file-nope")
    assert e.value.param == "file_id"
    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def test_responses_with_file_search(server, tmp_path, monkeypatch):
    app, _, client = server
    wifi = upload(tmp_path, "wifi.md", DOCS["wifi.md"])
    store = client.vector_stores.create(name="kb", file_ids=[wifi])
    tool = {"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 2}
    resp = client.responses.create(model="tiny", input="How do I reset the Wi-Fi?", tools=[tool],
                                   include=["file_search_call.results"], instructions="Be brief.",
                                   max_output_tokens=8, temperature=0)
    assert isinstance(resp, Response) and resp.id.startswith("resp_")
    call, msg = resp.output
    assert call.type == "file_search_call" and call.queries == ["How do I reset the Wi-Fi?"]
    assert call.results[0].file_id == wifi and call.results[0].filename == "wifi.md"
    assert "reset button" in call.results[0].text
    assert msg.type == "message" and msg.role == "assistant"
    assert resp.output_text == msg.content[0].text and resp.usage.input_tokens > 50
    assert resp.usage.output_tokens <= 8 and resp.tools[0].type == "file_search"
    bare = client.responses.create(model="tiny", input=[{"role": "user", "content": "hi"}],
                                   tools=[tool], max_output_tokens=2)
    assert bare.output[0].results is None  # results only with include
    plain = client.responses.create(model="tiny", input="hi", max_output_tokens=2)
    assert [o.type for o in plain.output] == ["message"]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="tiny", input="hi", tools=[{"type": "web_search"}])

    # citations: an answer that quotes its source gets a file_citation at the sentence's end
    answer = "Hold the reset button for ten seconds [1]."

    class Quoting:
        def __init__(self, lm):
            pass

        def chat(self, messages, params=None):
            prompt = "\n".join(m["content"] for m in messages)  # wherever the layout puts them
            assert "[1] from wifi.md" in prompt  # sources shown by filename
            return GenerationResult(answer, "stop", 100, 9, 0)

    monkeypatch.setattr("afinar.server.routes_responses.Generator", Quoting)
    resp = client.responses.create(model="tiny", input="How do I reset the Wi-Fi?", tools=[tool])
    ann = resp.output[1].content[0].annotations
    assert [(a.type, a.file_id, a.filename, a.index) for a in ann] == [
        ("file_citation", wifi, "wifi.md", len(answer))]
    from afinar.server.routes_responses import grounded_chat

    text, annotations, usage = grounded_chat(app, "tiny", [{"role": "user", "content": "wifi?"}],
                                             tool, SamplingParams(max_tokens=8),
                                             groups=None)  # local mode's: an admin's
    assert text == answer and annotations[0]["file_id"] == wifi and usage["total_tokens"] == 109
    # the same grounding on chat completions (afinar's extension): citations as annotations
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "How do I reset the Wi-Fi?"}],
        tools=[tool])
    msg = chat.choices[0].message
    assert msg.content == answer and chat.usage.total_tokens == 109
    ann = [a if isinstance(a, dict) else a.model_dump() for a in msg.annotations]
    assert ann[0]["type"] == "file_citation" and ann[0]["file_id"] == wifi
