"""Malformed request bodies, by endpoint: each gets a 4xx in OpenAI's error shape (never a 500),
before any work, and the server answers normally afterwards. Bodies are checked against
OpenAI's published request schemas (``afinar.server.schemas``) and, before parsing, against the
size caps and strict JSON (``afinar.server.limits``)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from afinar.models import Catalog
from afinar.server.app import create_app
from afinar.server.limits import MULTIPART_SLACK, BodyLimits, check_json, parse_size
from afinar.server.schemas import MAX_SEARCH_QUERIES
from tests.helpers import home_at

U = [{"role": "user", "content": "hi"}]
FN = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
R_FN = {"type": "function", "name": "get_weather", "parameters": FN["function"]["parameters"]}


def chat(**kw):
    return {"model": "tiny", "messages": U, "max_tokens": 2, **kw}


def fs(vs, **kw):
    return {"type": "file_search", "vector_store_ids": [vs], **kw}


def resp(**kw):
    return {"model": "tiny", "input": "hi", "max_output_tokens": 2, **kw}


def fb(**kw):
    body = {"request_id": "chatcmpl-x", "type": "rating", "rating": 1, **kw}
    return {k: v for k, v in body.items() if v is not None}


# (id, path, body, expected status, expected param or None); "{vs}" is a real vector store id
CASES = [
    # -- chat completions: messages ----------------------------------------------------------
    ("chat-content-int", "chat", chat(messages=[{"role": "user", "content": 12345}]), 400,
     "messages.0.content"),
    ("chat-no-messages", "chat", chat(messages=[]), 400, "messages"),
    ("chat-messages-string", "chat", chat(messages="hi"), 400, "messages"),
    ("chat-message-string", "chat", chat(messages=["hi"]), 400, "messages.0"),
    ("chat-role-wizard", "chat", chat(messages=[{"role": "wizard", "content": "x"}]), 400,
     "messages.0.role"),
    ("chat-no-role", "chat", chat(messages=[{"content": "x"}]), 400, "messages.0.role"),
    ("chat-role-int", "chat", chat(messages=[{"role": 3, "content": "x"}]), 400, None),
    ("chat-tool-no-call-id", "chat", chat(messages=[{"role": "tool", "content": "x"}]), 400,
     "messages.0.tool_call_id"),
    ("chat-assistant-empty", "chat", chat(messages=[{"role": "assistant"}]), 400, "messages.0"),
    ("chat-function-no-name", "chat", chat(messages=[{"role": "function", "content": "x"}]),
     400, "messages.0.name"),
    ("chat-system-image", "chat", chat(messages=[{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]), 400, None),
    ("chat-user-empty-parts", "chat", chat(messages=[{"role": "user", "content": []}]), 400,
     "messages.0.content"),
    ("chat-part-unknown", "chat", chat(messages=[{"role": "user", "content": [
        {"type": "video", "video": "x"}]}]), 400, None),
    ("chat-part-no-text", "chat", chat(messages=[{"role": "user", "content": [
        {"type": "text"}]}]), 400, "messages.0.content.0.text"),
    ("chat-image-unsupported", "chat", chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]), 400,
     "messages.0.content.0"),
    ("chat-tool-call-bad-type", "chat", chat(messages=[{"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "shell", "function": {"name": "f", "arguments": "{}"}}]}]), 400,
     None),
    ("chat-tool-call-args-object", "chat", chat(messages=[{"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}]}]), 400,
     None),
    ("chat-message-extra", "chat", chat(messages=[{"role": "user", "content": "x", "mood": 1}]),
     400, "messages.0.mood"),
    ("chat-name-too-long", "chat", chat(messages=[{"role": "user", "content": "x",
                                                   "name": "n" * 65}]), 400, None),
    # -- chat completions: tools and tool_choice -----------------------------------------------
    ("chat-tool-fn-string", "chat", chat(tools=[{"type": "function", "function": "notadict"}]),
     400, "tools.0.function"),
    ("chat-tool-choice-fn-string", "chat", chat(tools=[FN], tool_choice={
        "type": "function", "function": "get_weather"}), 400, "tool_choice.function"),
    ("chat-tool-choice-unknown", "chat", chat(tools=[FN], tool_choice="always"), 400,
     "tool_choice"),
    ("chat-tool-choice-not-in-tools", "chat", chat(tools=[FN], tool_choice={
        "type": "function", "function": {"name": "other"}}), 400, "tool_choice"),
    ("chat-required-without-tools", "chat", chat(tool_choice="required"), 400, "tool_choice"),
    ("chat-tool-name-spaces", "chat", chat(tools=[{"type": "function", "function": {
        "name": "get weather"}}]), 400, "tools.0.function.name"),
    ("chat-tool-type-unknown", "chat", chat(tools=[{"type": "browser"}]), 400, "tools.0.type"),
    ("chat-too-many-tools", "chat", chat(tools=[FN] * 129), 400, "tools"),
    ("chat-functions-deprecated", "chat", chat(functions=[FN["function"]]), 400, "functions"),
    ("chat-no-role-file-search", "chat", chat(messages=[{"content": "x"}], tools=["fs"]), 400,
     "messages.0.role"),
    ("chat-fs-weight-abc", "chat", chat(tools=[{"fs": {"ranking_options": {"hybrid_search": {
        "embedding_weight": "abc", "text_weight": 1}}}}]), 400,
     "tools.0.ranking_options.hybrid_search.embedding_weight"),
    ("chat-fs-threshold-high", "chat", chat(tools=[{"fs": {"ranking_options": {
        "score_threshold": "high"}}}]), 400, "tools.0.ranking_options.score_threshold"),
    ("chat-fs-no-stores", "chat", chat(tools=[{"type": "file_search", "vector_store_ids": []}]),
     400, "tools.0.vector_store_ids"),
    ("chat-fs-negative-weight", "chat", chat(tools=[{"fs": {"ranking_options": {
        "hybrid_search": {"embedding_weight": -1, "text_weight": 1}}}}]), 400,
     "tools.0.ranking_options.hybrid_search.embedding_weight"),
    ("chat-fs-zero-weights", "chat", chat(tools=[{"fs": {"ranking_options": {
        "hybrid_search": {"embedding_weight": 0, "text_weight": 0}}}}]), 400, None),
    ("chat-fs-bad-filter", "chat", chat(tools=[{"fs": {"filters": {"type": "xor"}}}]), 400,
     None),
    # -- chat completions: sampling and the rest ----------------------------------------------
    ("chat-temperature-3", "chat", chat(temperature=3), 400, "temperature"),
    ("chat-temperature-string", "chat", chat(temperature="hot"), 400, "temperature"),
    ("chat-top-p-0", "chat", chat(top_p=0), 400, "top_p"),
    ("chat-n-0", "chat", chat(n=0), 400, "n"),
    ("chat-n-100", "chat", chat(n=100), 400, "n"),
    ("chat-max-tokens-0", "chat", chat(max_tokens=0), 400, "max_tokens"),
    ("chat-max-tokens-string", "chat", chat(max_tokens="ten"), 400, "max_tokens"),
    ("chat-five-stops", "chat", chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("chat-empty-stop", "chat", chat(stop=""), 400, "stop"),
    ("chat-seed-negative", "chat", chat(seed=-1), 400, "seed"),
    ("chat-penalty-5", "chat", chat(frequency_penalty=5), 400, "frequency_penalty"),
    ("chat-format-xml", "chat", chat(response_format={"type": "xml"}), 400,
     "response_format.type"),
    ("chat-schema-no-name", "chat", chat(response_format={"type": "json_schema", "json_schema": {
        "schema": {"type": "object"}}}), 400, "response_format.json_schema.name"),
    ("chat-unknown-field", "chat", chat(temprature=0.5), 400, "temprature"),
    ("chat-no-model", "chat", {"messages": U}, 400, "model"),
    ("chat-model-int", "chat", chat(model=12), 400, "model"),
    ("chat-stream-yes", "chat", chat(stream="yes"), 400, "stream"),
    ("chat-logprobs", "chat", chat(logprobs=True), 400, "logprobs"),
    ("chat-logit-bias", "chat", chat(logit_bias={"50256": -100}), 400, "logit_bias"),
    ("chat-logit-bias-200", "chat", chat(logit_bias={"1": 200}), 400, None),
    ("chat-metadata-17", "chat", chat(metadata={f"k{i}": "v" for i in range(17)}), 400,
     "metadata"),
    ("chat-unknown-model", "chat", chat(model="no-such-model"), 404, "model"),
    ("chat-body-array", "chat", [], 400, None),
    # -- completions --------------------------------------------------------------------------
    ("cmpl-no-prompt", "cmpl", {"model": "tiny"}, 400, "prompt"),
    ("cmpl-prompt-int", "cmpl", {"model": "tiny", "prompt": 5}, 400, "prompt"),
    ("cmpl-prompt-empty-list", "cmpl", {"model": "tiny", "prompt": []}, 400, "prompt"),
    ("cmpl-token-prompt", "cmpl", {"model": "tiny", "prompt": [1, 2, 3]}, 400, None),
    ("cmpl-echo", "cmpl", {"model": "tiny", "prompt": "x", "echo": True}, 400, "echo"),
    ("cmpl-max-tokens-negative", "cmpl", {"model": "tiny", "prompt": "x", "max_tokens": -1},
     400, "max_tokens"),
    ("cmpl-unknown-field", "cmpl", {"model": "tiny", "prompt": "x", "best_of": 3}, 400,
     "best_of"),
    # -- responses ----------------------------------------------------------------------------
    ("resp-content-int", "resp", resp(input=[{"role": "user", "content": 5}]), 400,
     "input.0.content"),
    ("resp-item-unknown", "resp", resp(input=[{"type": "weird"}]), 400, None),
    ("resp-role-wizard", "resp", resp(input=[{"role": "wizard", "content": "x"}]), 400,
     "input.0.role"),
    ("resp-part-no-text", "resp", resp(input=[{"role": "user", "content": [
        {"type": "input_text"}]}]), 400, "input.0.content.0.text"),
    ("resp-empty-input", "resp", resp(input=[]), 400, "input"),
    ("resp-web-search", "resp", resp(tools=[{"type": "web_search"}]), 400, "tools.0.type"),
    ("resp-choice-not-in-tools", "resp", resp(tools=[R_FN], tool_choice={
        "type": "function", "name": "other"}), 400, "tool_choice"),
    ("resp-search-and-functions", "resp", resp(tools=["fs", R_FN]), 400, "tools"),
    ("resp-temperature-negative", "resp", resp(temperature=-1), 400, "temperature"),
    ("resp-max-output-0", "resp", resp(max_output_tokens=0), 400, "max_output_tokens"),
    ("resp-unknown-field", "resp", resp(temprature=1), 400, "temprature"),
    ("resp-schema-missing", "resp", resp(text={"format": {"type": "json_schema",
                                                          "name": "x"}}), 400, None),
    ("resp-fs-threshold-high", "resp", resp(tools=[{"fs": {"ranking_options": {
        "score_threshold": "high"}}}]), 400, "tools.0.ranking_options.score_threshold"),
    ("resp-call-output-no-id", "resp", resp(input=[{"type": "function_call_output",
                                                    "output": "x"}]), 400, None),
    # -- embeddings ---------------------------------------------------------------------------
    ("emb-no-input", "emb", {"model": "all-minilm-l6-v2"}, 400, "input"),
    ("emb-input-int", "emb", {"input": 5}, 400, "input"),
    ("emb-too-many", "emb", {"input": ["x"] * 2049}, 400, "input"),
    ("emb-empty-string", "emb", {"input": [""]}, 400, "input"),
    ("emb-format-int8", "emb", {"input": "x", "encoding_format": "int8"}, 400,
     "encoding_format"),
    ("emb-dimensions-0", "emb", {"input": "x", "dimensions": 0}, 400, "dimensions"),
    ("emb-unknown-field", "emb", {"input": "x", "truncate": True}, 400, "truncate"),
    # -- vector stores and search -------------------------------------------------------------
    ("vs-name-1mb", "vs", {"name": "x" * 1_000_000}, 400, "name"),
    ("vs-name-257", "vs", {"name": "x" * 257}, 400, "name"),
    ("vs-file-ids-501", "vs", {"file_ids": [f"file-{i}" for i in range(501)]}, 400,
     "file_ids"),
    ("vs-expires-0-days", "vs", {"expires_after": {"anchor": "last_active_at", "days": 0}},
     400, "expires_after.days"),
    ("vs-metadata-long", "vs", {"metadata": {"k": "v" * 600}}, 400, "metadata"),
    ("search-1000-queries", "search", {"query": ["q"] * 1000}, 400, "query"),
    ("search-empty-query", "search", {"query": ""}, 400, "query"),
    ("search-query-int", "search", {"query": 5}, 400, "query"),
    ("search-query-5000", "search", {"query": "q" * 5000}, 400, "query"),
    ("search-negative-weight", "search", {"query": "q", "ranking_options": {"hybrid_search": {
        "embedding_weight": -1, "text_weight": 1}}}, 400,
     "ranking_options.hybrid_search.embedding_weight"),
    ("search-threshold-high", "search", {"query": "q", "ranking_options": {
        "score_threshold": "high"}}, 400, "ranking_options.score_threshold"),
    ("search-filter-xor", "search", {"query": "q", "filters": {"type": "xor"}}, 400, None),
    ("search-in-scalar", "search", {"query": "q", "filters": {"type": "in", "key": "a",
                                                              "value": "x"}}, 400, "filters"),
    ("search-max-results-0", "search", {"query": "q", "max_num_results": 0}, 400,
     "max_num_results"),
    # -- fine-tuning --------------------------------------------------------------------------
    ("job-hyperparameters-string", "job", {"model": "tiny", "training_file": "file-x",
                                           "hyperparameters": "x"}, 400, "hyperparameters"),
    ("job-method-hyperparameters-string", "job", {
        "model": "tiny", "training_file": "file-x",
        "method": {"type": "supervised", "supervised": {"hyperparameters": "x"}}}, 400,
     "method.supervised.hyperparameters"),
    ("job-no-training-file", "job", {"model": "tiny"}, 400, "training_file"),
    ("job-seed-negative", "job", {"model": "tiny", "training_file": "file-x", "seed": -5}, 400,
     "seed"),
    # -- feedback (afinar's extension) -----------------------------------------------------------
    ("fb-no-request-id", "fb", {"type": "rating", "rating": 1}, 400, "request_id"),
    ("fb-request-id-empty", "fb", fb(request_id=""), 400, "request_id"),
    ("fb-request-id-int", "fb", fb(request_id=7), 400, "request_id"),
    ("fb-no-type", "fb", {"request_id": "chatcmpl-x", "rating": 1}, 400, "type"),
    ("fb-type-unknown", "fb", fb(type="stars"), 400, "type"),
    ("fb-rating-two", "fb", fb(rating=2), 400, "rating"),
    ("fb-rating-zero", "fb", fb(rating=0), 400, "rating"),
    ("fb-rating-bool", "fb", fb(rating=True), 400, "rating"),
    ("fb-rating-string", "fb", fb(rating="1"), 400, "rating"),
    ("fb-rating-float", "fb", fb(rating=1.0), 400, "rating"),
    ("fb-extra-field", "fb", fb(stars=5), 400, "stars"),
    ("fb-reason-int", "fb", fb(reason=5), 400, "reason"),
    ("fb-reason-too-long", "fb", fb(reason="x" * 5000), 400, "reason"),
    ("fb-correction-empty", "fb", fb(type="correction", rating=None, correction=""), 400,
     "correction"),
    ("fb-choice-negative", "fb", fb(choice_index=-1), 400, "choice_index"),
    ("fb-choice-string", "fb", fb(choice_index="0"), 400, "choice_index"),
    ("fb-preferred-negative", "fb", fb(type="preference", rating=None, preferred_index=-2),
     400, "preferred_index"),
    ("fb-body-list", "fb", [fb()], 400, None),
    ("fb-unknown-request", "fb", fb(), 404, "request_id"),
]

# raw bytes Python's json module would take, or JSON that is not UTF-8 text
RAW = [
    ("raw-lone-surrogate", "chat", b'{"model": "tiny", "messages": [{"role": "user", '
                                   b'"content": "x\\ud800y"}]}'),
    ("raw-nan", "chat", b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], '
                        b'"temperature": NaN}'),
    ("raw-infinity", "search", b'{"query": "q", "ranking_options": {"hybrid_search": '
                               b'{"embedding_weight": Infinity, "text_weight": 1}}}'),
    ("raw-1e999", "chat", b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}],'
                          b' "top_p": 1e999}'),
    ("raw-nan-weight", "search", b'{"query": "q", "ranking_options": {"hybrid_search": '
                                 b'{"embedding_weight": NaN, "text_weight": 1}}}'),
    ("raw-deep", "chat", b"[" * 5000 + b"]" * 5000),
    ("raw-not-json", "resp", b"model=tiny&input=hi"),
    ("raw-truncated", "emb", b'{"input": ["x"'),
    ("raw-latin1", "chat", b'{"model": "tiny", "messages": [{"role": "user", "content": "\xe9"}]}'),
]

PATHS = {"chat": "/v1/chat/completions", "cmpl": "/v1/completions", "resp": "/v1/responses",
         "emb": "/v1/embeddings", "vs": "/v1/vector_stores",
         "search": "/v1/vector_stores/{vs}/search", "job": "/v1/fine_tuning/jobs",
         "fb": "/v1/feedback"}


@pytest.fixture(scope="module")
def http(tmp_path_factory, tiny_model_template):
    with home_at(tmp_path_factory.mktemp("malformed") / "home"):
        Catalog().add("tiny", tiny_model_template)
        app = create_app(auth=False)
        app.state.spawn_workers = False
        with TestClient(app, raise_server_exceptions=False) as client:
            client.vs = client.post("/v1/vector_stores", json={"name": "s"}).json()["id"]
            yield client


def _fill(body, vs):
    """``"fs"`` -> a file_search tool on the store; ``{"fs": {...}}`` -> one with those fields."""
    if body == "fs":
        return fs(vs)
    if isinstance(body, dict) and set(body) == {"fs"}:
        return fs(vs, **body["fs"])
    if isinstance(body, dict):
        return {k: _fill(v, vs) for k, v in body.items()}
    if isinstance(body, list):
        return [_fill(v, vs) for v in body]
    return body


def _check(r, status: int, param: str | None = None) -> None:
    assert r.status_code == status, r.text[:400]
    err = r.json()["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"], err
    assert err["type"] == "invalid_request_error", err
    if param is not None:
        assert err["param"] == param, err


def test_the_battery_is_large():
    assert len(CASES) + len(RAW) >= 60
    assert len({c[0] for c in CASES} | {c[0] for c in RAW}) == len(CASES) + len(RAW)


@pytest.mark.parametrize("name,where,body,status,param", CASES, ids=[c[0] for c in CASES])
def test_malformed_body(http, name, where, body, status, param):
    r = http.post(PATHS[where].format(vs=http.vs), json=_fill(body, http.vs))
    _check(r, status, param)
    assert http.get("/health").status_code == 200


@pytest.mark.parametrize("name,where,raw", RAW, ids=[c[0] for c in RAW])
def test_malformed_json(http, name, where, raw):
    r = http.post(PATHS[where].format(vs=http.vs), content=raw,
                  headers={"content-type": "application/json"})
    _check(r, 400)
    assert http.get("/health").status_code == 200


def test_the_server_still_generates_after_the_battery(http):
    for name, where, body, _status, _param in CASES[:20]:
        http.post(PATHS[where].format(vs=http.vs), json=_fill(body, http.vs))
    r = http.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
    r = http.post(f"/v1/vector_stores/{http.vs}/search",
                  json={"query": ["q"] * MAX_SEARCH_QUERIES})
    assert r.status_code == 200, r.text


def test_json_body_cap_before_parsing(home, tiny_model_template, monkeypatch):
    monkeypatch.setenv("AFINAR_MAX_JSON_BODY", "2KiB")
    with TestClient(create_app(auth=False), raise_server_exceptions=False) as client:
        r = client.post("/v1/chat/completions", json=chat(messages=[
            {"role": "user", "content": "x" * 3000}]))
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        r = client.post("/v1/embeddings", json={"input": "x" * 100})
        assert r.status_code != 413
        assert client.get("/health").status_code == 200


def test_size_settings_are_parsed():
    assert parse_size("4MiB", 1, "x") == 4 * 1024**2 and parse_size("512", 1, "x") == 512
    assert parse_size(None, 7, "x") == 7 and parse_size("1g", 1, "x") == 1024**3
    from afinar.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        parse_size("lots", 1, "AFINAR_MAX_JSON_BODY")


def test_strict_json_check():
    assert check_json(b'{"a": 1.5, "b": "\\ud83d\\ude00"}') is None  # a surrogate pair is fine
    assert "surrogate" in check_json(b'{"a": "\\udc00"}')
    assert "finite" in check_json(b'{"a": -Infinity}')
    assert "nested" in check_json(json.dumps({"a": [[[[[]]]]] * 1}).encode().replace(
        b"[[[[[]]]]]", b"[" * 70 + b"]" * 70))


async def _upload(app, chunk: bytes, chunks: int) -> tuple[int, int, dict]:
    """A multipart upload streamed into the app chunk by chunk, as a server hands it over:
    (status, chunks the app consumed, the error)."""
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
            f"assistants\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.txt\"\r\nContent-Type: text/plain\r\n\r\n").encode()
    consumed, sent = 0, {"status": None, "body": b""}

    async def receive():
        nonlocal consumed
        consumed += 1
        if consumed == 1:
            return {"type": "http.request", "body": head, "more_body": True}
        return {"type": "http.request", "body": chunk, "more_body": consumed <= chunks}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    scope = {"type": "http", "method": "POST", "path": "/v1/files", "raw_path": b"/v1/files",
             "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
             "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                         (b"host", b"test")]}
    await app(scope, receive, send)
    return sent["status"], consumed, json.loads(sent["body"] or b"{}").get("error", {})


def test_an_upload_is_refused_while_it_streams(home):
    """No Content-Length (chunked): the cap is checked as bytes arrive, and the upload is
    refused once past it, not after the whole body has been spooled."""
    import anyio

    app = create_app(auth=False)
    app.state.max_upload_bytes = 100 * 1024
    chunk, chunks = b"x" * 16 * 1024, 4096  # a 64 MiB body
    status, consumed, err = anyio.run(_upload, app, chunk, chunks)
    assert status == 413 and err["code"] == "file_too_large", err
    assert consumed * len(chunk) <= app.state.max_upload_bytes + MULTIPART_SLACK + 2 * len(chunk)
    assert consumed < chunks // 100


def test_a_declared_length_over_the_cap_is_refused_unread(home):
    app = create_app(auth=False)
    app.state.max_upload_bytes = 1024
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/files", content=b"x" * (MULTIPART_SLACK + 2048),
                        headers={"content-type": "multipart/form-data; boundary=zz"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
        assert client.get("/health").status_code == 200
    assert isinstance(BodyLimits(app).max_json, int)
