"""The OpenAI-compatible core endpoints (models, chat, completions, embeddings, files), driven
both with raw HTTP and with the real ``openai`` SDK (base_url + key changed, nothing else)."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from afinar.models.generation import GenerationResult
from afinar.server import routes_chat
from afinar.server import app as app_module


MSGS = [{"role": "user", "content": "hello world"}]
FT_ID = "ft:tiny:afinar:demo:abc123"


pytestmark = pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL (tests/conftest.py)


def _sdk(http, key: str = "x") -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http,
                         max_retries=0)


def create_app(auth: bool):
    return app_module.create_app(auth=auth)


_INSPECTED: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _shared_inspect_cache(home):
    """The catalog inspects the built-in GGUF once per AFINAR_HOME (~3 s): reuse the facts (keyed
    by path, size and mtime) across this module's fresh homes."""
    from afinar.settings import get_settings

    cache = get_settings().models_dir / "inspect-cache.json"
    if "text" in _INSPECTED:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(_INSPECTED["text"])
    yield
    if cache.is_file():
        _INSPECTED["text"] = cache.read_text()


@pytest.fixture
def srv(home, tiny_model_template):
    from afinar.models import Catalog

    Catalog().add("tiny", tiny_model_template)
    http = TestClient(create_app(auth=False))
    yield SimpleNamespace(http=http, sdk=_sdk(http), template=tiny_model_template)
    http.close()


# -- models -----------------------------------------------------------------------------------
def test_models_list_retrieve_delete(srv):
    from afinar.store.db import get_database
    from afinar.store.tables import ModelRecord

    with get_database().session() as s:
        s.add(ModelRecord(id=FT_ID, kind="chat", format="hf", path=str(srv.template),
                          base_model="tiny", owned_by="user-local", created_at=1, info={}))
    ids = {m.id: m for m in srv.sdk.models.list()}
    assert {"tiny", "all-minilm-l6-v2", "smollm2-135m-instruct", FT_ID} <= set(ids)
    assert ids["all-minilm-l6-v2"].owned_by == "afinar" and ids["tiny"].owned_by == "user"
    assert ids["tiny"].object == "model" and ids["tiny"].model_extra["kind"] == "chat"
    got = srv.sdk.models.retrieve(FT_ID)  # an id with colons
    assert got.id == FT_ID and got.owned_by == "user-local"
    with pytest.raises(openai.PermissionDeniedError) as e:
        srv.sdk.models.delete("tiny")
    assert e.value.code == "model_not_deletable"
    assert srv.sdk.models.delete(FT_ID).deleted is True
    with pytest.raises(openai.NotFoundError) as e:
        srv.sdk.models.retrieve(FT_ID)
    assert e.value.code == "model_not_found"


def test_unknown_model_is_an_openai_404(srv):
    r = srv.http.post("/v1/chat/completions", json={"model": "nope", "messages": MSGS})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert err["type"] == "invalid_request_error" and "nope" in err["message"]
    r = srv.http.post("/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


# -- chat -------------------------------------------------------------------------------------
def test_chat_seeded_n_stop_length_and_usage(srv):
    from afinar.models.templates import render_ids
    from afinar.models.loader import load_tokenizer
    from afinar.models import Catalog

    kw = dict(model="tiny", messages=MSGS, temperature=1.0, max_tokens=12)
    a = srv.sdk.chat.completions.create(seed=5, **kw)
    b = srv.sdk.chat.completions.create(seed=5, **kw)
    assert a.object == "chat.completion" and a.id.startswith("chatcmpl-")
    text = a.choices[0].message.content
    assert text == b.choices[0].message.content and a.choices[0].message.role == "assistant"
    assert a.choices[0].finish_reason == "length" and a.usage.completion_tokens == 12
    n_prompt = len(render_ids(load_tokenizer(Catalog().get("tiny")), MSGS))
    assert a.usage.prompt_tokens == n_prompt and a.usage.total_tokens == n_prompt + 12
    assert a.system_fingerprint
    two = srv.sdk.chat.completions.create(seed=5, n=2, **kw)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].message.content == text  # choice i uses seed + i
    assert two.usage.prompt_tokens == n_prompt and two.usage.completion_tokens == 24
    stop = text.strip()[3:6]
    cut = srv.sdk.chat.completions.create(seed=5, stop=[stop], **kw)
    assert cut.choices[0].message.content == text[:text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_chat_streaming_matches_and_ends_with_usage(srv):
    kw = dict(model="tiny", messages=MSGS, temperature=1.0, max_tokens=15, seed=9)
    whole = srv.sdk.chat.completions.create(**kw).choices[0].message.content
    chunks = list(srv.sdk.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **kw))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 15
    raw = srv.http.post("/v1/chat/completions", json={**kw, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_context_overflow_is_400(srv):
    long = [{"role": "user", "content": "hello world " * 300}]
    with pytest.raises(openai.BadRequestError) as e:
        srv.sdk.chat.completions.create(model="tiny", messages=long)
    assert e.value.code == "context_length_exceeded"


def test_legacy_completions(srv):
    r = srv.sdk.completions.create(model="tiny", prompt="hello", seed=1)
    assert r.object == "text_completion" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 16  # OpenAI's default max_tokens
    again = srv.sdk.completions.create(model="tiny", prompt=["hello", "world"], seed=1,
                                       max_tokens=4)
    assert [c.index for c in again.choices] == [0, 1]
    streamed = list(srv.sdk.completions.create(model="tiny", prompt="hello", seed=1,
                                               stream=True))
    assert "".join(c.choices[0].text for c in streamed) == r.choices[0].text
    bad = srv.http.post("/v1/completions", json={"model": "tiny", "prompt": "x", "echo": True})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "echo"


# -- tools and JSON mode ----------------------------------------------------------------------
def test_tool_call_parser():
    text = ('Let me check.\n<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n'
            '</tool_call>\n<tool_call>{"name": "time", "arguments": {}}</tool_call>')
    content, calls = routes_chat.parse_tool_calls(text, {"weather", "time"})
    assert content == "Let me check."
    assert [c["function"]["name"] for c in calls] == ["weather", "time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    assert calls[0]["id"].startswith("call_") and calls[0]["type"] == "function"
    assert routes_chat.parse_tool_calls('{"name": "time", "arguments": {}}', {"time"})[0] is None
    assert routes_chat.parse_tool_calls("<tool_call>not json</tool_call>") == (
        "<tool_call>not json</tool_call>", [])
    assert routes_chat.parse_tool_calls('<tool_call>{"name": "rm"}</tool_call>', {"ls"})[1] == []


TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]


def test_tool_choice_none_drops_the_tools(srv):
    kw = dict(model="tiny", messages=MSGS, max_tokens=6, seed=3)
    plain = srv.sdk.chat.completions.create(**kw)
    none = srv.sdk.chat.completions.create(tools=TOOLS, tool_choice="none", **kw)
    assert none.choices[0].message.content == plain.choices[0].message.content
    with_tools = srv.sdk.chat.completions.create(tools=TOOLS, **kw)
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens  # tools in the prompt
    with pytest.raises(openai.BadRequestError):
        srv.sdk.chat.completions.create(
            tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}, **kw)


class _FakeStream:
    def __init__(self, text: str, seed: int):
        self.text, self.result = text, GenerationResult(text, "stop", 10, 5, seed)

    def __iter__(self):
        yield self.text


class _FakeGenerator:
    """Stands in for ``Generator``: replies with scripted texts."""

    replies: list[str] = []
    seen: list = []

    def __init__(self, lm):
        pass

    def stream(self, messages, params, tools=None):
        _FakeGenerator.seen.append((messages, params, tools))
        return _FakeStream(_FakeGenerator.replies.pop(0), params.seed or 0)

    def chat(self, messages, params, tools=None):
        return self.stream(messages, params, tools).result


def test_tool_calls_end_to_end_with_the_sdk(srv, monkeypatch):
    monkeypatch.setattr(routes_chat, "Generator", _FakeGenerator)
    call = '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>'
    _FakeGenerator.replies = [call, call]
    r = srv.sdk.chat.completions.create(model="tiny", messages=MSGS, tools=TOOLS)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None
    assert c.message.tool_calls[0].function.name == "weather"
    assert json.loads(c.message.tool_calls[0].function.arguments) == {"city": "Oslo"}
    chunks = list(srv.sdk.chat.completions.create(model="tiny", messages=MSGS, tools=TOOLS,
                                                  stream=True))
    deltas = [d for ch in chunks for d in (ch.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "weather" and chunks[-1].choices[0].finish_reason == \
        "tool_calls"


def test_json_mode_sets_the_constraint_and_the_hint(srv, monkeypatch):
    monkeypatch.setattr(routes_chat, "Generator", _FakeGenerator)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    cases = [({"type": "json_schema", "json_schema": {"name": "x", "schema": schema,
                                                      "strict": True}}, schema),
             ({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
              {**schema, "x-guidance": {"lenient": True}}),
             ({"type": "json_object"}, {"type": "object"}),
             ({"type": "text"}, None)]
    for fmt, constrained in cases:
        _FakeGenerator.seen, _FakeGenerator.replies = [], ['{"n": 2}', '{"n": 3}']
        r = srv.sdk.chat.completions.create(model="tiny", messages=MSGS, response_format=fmt,
                                            n=2, seed=1)
        assert [c.message.content for c in r.choices] == ['{"n": 2}', '{"n": 3}']
        assert [p.json_schema for _, p, _ in _FakeGenerator.seen] == [constrained] * 2
        system = _FakeGenerator.seen[0][0][0]
        assert (system["role"] == "system" and "JSON object" in system["content"]) == (
            constrained is not None)
        assert ("JSON schema" in str(_FakeGenerator.seen)) == (fmt.get("type") == "json_schema")
    with pytest.raises(openai.BadRequestError):
        srv.sdk.chat.completions.create(model="tiny", messages=MSGS, response_format={
            "type": "json_schema", "json_schema": {"name": "x"}})


JUDGE = {"type": "object", "properties": {
    "verdict": {"enum": ["pass", "fail"]}, "score": {"type": "integer", "minimum": 1, "maximum": 5},
    "reasons": {"type": "array", "items": {"enum": ["facts", "tone", "length"]}, "maxItems": 2},
    "detail": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
               "additionalProperties": False}},
    "required": ["verdict", "score", "reasons", "detail"], "additionalProperties": False}


def test_json_mode_is_constrained_on_the_real_model(srv, tiny_long):
    """The tiny random model never writes JSON by itself; through JSON mode every reply that
    ends parses and matches the schema, streamed or not."""
    import jsonschema

    fmt = {"type": "json_schema", "json_schema": {"name": "judge", "schema": JUDGE,
                                                  "strict": True}}
    kw = dict(model="tiny-long", messages=MSGS, max_tokens=150)
    r = srv.sdk.chat.completions.create(response_format=fmt, n=2, seed=1, **kw)
    for c in r.choices:
        assert c.finish_reason == "stop"
        jsonschema.validate(json.loads(c.message.content), JUDGE)
    r = srv.sdk.chat.completions.create(response_format={"type": "json_object"}, seed=4, **kw)
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    chunks = list(srv.sdk.chat.completions.create(response_format=fmt, seed=2, stream=True, **kw))
    deltas = [ch.choices[0].delta.content for ch in chunks if ch.choices[0].delta.content]
    assert len(deltas) > 10  # streamed token by token, not one buffered reply
    jsonschema.validate(json.loads("".join(deltas)), JUDGE)
    assert chunks[-1].choices[0].finish_reason == "stop"
    cut = srv.sdk.chat.completions.create(response_format=fmt, seed=1,
                                          **{**kw, "max_tokens": 5})
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 5
    unsupported = {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}
    with pytest.raises(openai.BadRequestError, match="cannot be enforced"):
        srv.sdk.chat.completions.create(response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": unsupported, "strict": True}}, seed=1, **kw)
    loose = srv.sdk.chat.completions.create(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": unsupported}}, seed=1, **{**kw, "max_tokens": 5})
    assert loose.choices[0].message.content.startswith("{")


# -- embeddings -------------------------------------------------------------------------------
def test_embeddings_float_base64_dimensions(srv):
    from afinar.models import Catalog

    if not Catalog().list(kind="embedding")[0].available:
        pytest.skip("the embedding model's wheel is not installed")
    texts = ["hello world", "the quick brown fox"]
    f = srv.sdk.embeddings.create(model="all-minilm-l6-v2", input=texts,
                                  encoding_format="float")
    assert f.object == "list" and [d.index for d in f.data] == [0, 1]
    assert len(f.data[0].embedding) == 384 and f.usage.prompt_tokens == 4 + 6
    b64 = srv.sdk.embeddings.create(model="all-minilm-l6-v2", input=texts)  # SDK asks base64
    assert np.allclose(b64.data[1].embedding, f.data[1].embedding, atol=1e-6)
    raw = srv.http.post("/v1/embeddings", json={"input": "hello world",
                                                "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(vec, f.data[0].embedding, atol=1e-6) and raw["model"] == "all-minilm-l6-v2"
    small = srv.sdk.embeddings.create(model="all-minilm-l6-v2", input="hello world",
                                      dimensions=64).data[0].embedding
    assert len(small) == 64 and abs(np.linalg.norm(small) - 1) < 1e-5
    for body in ({"input": [[1, 2, 3]]}, {"input": "x", "dimensions": 999},
                 {"input": "x", "model": "tiny"}, {"input": []}):
        r = srv.http.post("/v1/embeddings", json=body)
        assert r.status_code == 400 and "error" in r.json(), body


# -- files ------------------------------------------------------------------------------------
def _jsonl(n: int) -> bytes:
    rows = [{"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": str(2 * i)}]} for i in range(n)]
    return "\n".join(json.dumps(r) for r in rows).encode() + b"\n"


def _blobs(home) -> list:
    return [p for p in (home / "blobs" / "sha256").rglob("*") if p.is_file()] \
        if (home / "blobs" / "sha256").exists() else []


def test_files_lifecycle_through_the_sdk(srv, home):
    data = _jsonl(12)
    f = srv.sdk.files.create(file=("train.jsonl", data), purpose="fine-tune")
    assert f.object == "file" and f.status == "processed" and f.bytes == len(data)
    assert f.filename == "train.jsonl" and f.purpose == "fine-tune" and f.id.startswith("file-")
    other = srv.sdk.files.create(file=("../../etc/passwd", b"root:x:0:0\n"), purpose="assistants")
    assert other.filename == "passwd" and not (home.parent / "etc").exists()
    assert {x.id for x in srv.sdk.files.list()} == {other.id, f.id}
    assert [x.id for x in srv.sdk.files.list(purpose="fine-tune")] == [f.id]
    page = srv.http.get("/v1/files", params={"limit": 1}).json()
    assert len(page["data"]) == 1 and page["has_more"] is True
    assert srv.sdk.files.retrieve(f.id).bytes == len(data)
    assert srv.sdk.files.content(f.id).content == data
    assert srv.sdk.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        srv.sdk.files.retrieve(f.id)
    assert len(_blobs(home)) == 1  # only the other file's blob is left


def test_invalid_fine_tune_file_is_rejected_and_not_kept(srv, home):
    bad = _jsonl(11) + b'{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n'
    with pytest.raises(openai.BadRequestError) as e:
        srv.sdk.files.create(file=("bad.jsonl", bad), purpose="fine-tune")
    assert e.value.code == "invalid_file" and "line 12" in e.value.message
    assert "line 13" in e.value.message
    assert list(srv.sdk.files.list()) == [] and _blobs(home) == []
    r = srv.http.post("/v1/files", files={"file": ("x.txt", b"x")}, data={"purpose": "nope"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"


def test_upload_size_limit(srv, home):
    srv.http.app.state.max_upload_bytes = 10
    r = srv.http.post("/v1/files", files={"file": ("x.txt", b"x" * 11)},
                      data={"purpose": "assistants"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    assert _blobs(home) == []


# -- auth -------------------------------------------------------------------------------------
def test_auth_uses_openai_error_shape(home):
    from afinar.store.keys import ApiKeys

    _, secret = ApiKeys().create("t")
    with TestClient(create_app(auth=True)) as http:
        r = http.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            _sdk(http, "sk-wrong").models.list()
        assert any(m.id == "all-minilm-l6-v2" for m in _sdk(http, secret).models.list())
