"""A fuzz run of the server's OpenAPI spec with schemathesis: every operation gets a bounded
number of generated requests, valid and invalid, with an admin key; none may answer 5xx.

Requests that name a model are pointed at the tiny model half of the time (and their token
allowances capped), so chat, completions and responses really generate; the rest keep the
generated name (a 404). Reproducible: Hypothesis runs derandomized, without its example
database."""

from __future__ import annotations

import json
import time
import zlib

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from afinar.models import Catalog
from afinar.server.app import create_app
from afinar.store.keys import ApiKeys

EXAMPLES = 8  # per operation and generation mode
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
BUDGET_S = 100


def _cheap(body):
    """Point half of the model-naming bodies at the tiny model; cap token allowances."""
    if not isinstance(body, dict):
        return body
    if isinstance(body.get("model"), str) and zlib.crc32(json.dumps(
            body, sort_keys=True, default=str).encode()) % 2:
        body["model"] = "tiny"
    for key in TOKEN_FIELDS:
        if isinstance(body.get(key), int) and not isinstance(body[key], bool) and body[key] > 8:
            body[key] = 8
    return body


@pytest.fixture
def app(home, tiny_model_template):
    Catalog().add("tiny", tiny_model_template)
    _, secret = ApiKeys().create("fuzz", "team-a", admin=True)
    app = create_app()
    app.state.spawn_workers = False
    app.state.fuzz_headers = {"Authorization": f"Bearer {secret}"}
    return app


def _fuzz(op, mode: GenerationMode, headers: dict[str, str], failures: list[str]) -> int:
    """Send ``EXAMPLES`` generated requests to one operation; note 5xx answers and exceptions
    in ``failures``; check that 4xx answers carry OpenAI's error object. Returns the count."""
    calls = 0

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def fuzz(case):
        nonlocal calls
        case.body = _cheap(case.body)
        calls += 1
        try:
            response = case.call(headers=headers)
        except Exception as e:  # noqa: BLE001  raised in the app (a stream broken mid-way)
            failures.append(f"{op.label} ({mode.value}) raised {e!r}"[:400]
                            + f"\n  {case.as_curl_command()}")
            return
        if response.status_code >= 500:
            failures.append(f"{op.label} ({mode.value}) -> {response.status_code}: "
                            f"{response.text[:300]}\n  {case.as_curl_command()}")
        elif response.status_code >= 400:
            err = response.json().get("error")  # OpenAI's error shape
            assert isinstance(err, dict) and {"message", "type", "param", "code"} <= set(err), \
                f"{op.label}: {response.text[:300]}"

    try:
        fuzz()
    except Unsatisfiable:  # nothing can be invalid (no parameters, no body)
        assert mode is GenerationMode.NEGATIVE, op.label
    return calls


def test_fuzz_openapi_without_server_errors(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    t0 = time.monotonic()
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) > 40  # the whole API, not a part of it
    calls = sum(_fuzz(op, mode, app.state.fuzz_headers, failures) for op in operations
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE))
    elapsed = time.monotonic() - t0
    print(f"\nfuzz: {calls} requests over {len(operations)} operations in {elapsed:.1f} s")
    assert not failures, f"{len(failures)} server errors:\n" + "\n".join(failures[:20])
    assert elapsed < BUDGET_S


def test_what_the_fuzz_found(home, tiny_model_template):
    """Answers that were 500s or not in OpenAI's error shape before the fuzz run."""
    from fastapi.testclient import TestClient

    Catalog().add("tiny", tiny_model_template)
    with TestClient(create_app(auth=False), raise_server_exceptions=False) as http:
        r = http.post("/v1/responses", json={"model": "tiny", "input": []})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input"
        r = http.post("/v1/chat/completions", json={"model": "tiny", "stop": "",
                                                    "messages": [{"role": "user",
                                                                  "content": "hi"}]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "stop"
        r = http.post("/v1/chat/completions", content=b"\xbe[\xcf",
                      headers={"content-type": "application/json"})
        assert r.status_code in (400, 422) and r.json()["error"]["type"] == \
            "invalid_request_error"
        r = http.get("/v1/nothing-here")
        assert r.status_code == 404 and r.json()["error"]["message"] == \
            "Invalid URL (GET /v1/nothing-here)"
        r = http.put("/v1/files")
        assert r.status_code == 405 and r.headers["allow"]
        assert r.json()["error"]["message"] == "Invalid URL (PUT /v1/files)"


# Found by the fuzz run: a temperature of 1e-174 (valid: 0 <= t <= 2) overflowed the logits to
# NaN; such temperatures now decode greedily.
def test_a_vanishing_temperature_is_not_a_server_error(home, tiny_model_template):
    from fastapi.testclient import TestClient

    Catalog().add("tiny", tiny_model_template)
    with TestClient(create_app(auth=False), raise_server_exceptions=False) as http:
        r = http.post("/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}],
            "temperature": 1e-174, "max_tokens": 2})
        assert r.status_code == 200, r.text
