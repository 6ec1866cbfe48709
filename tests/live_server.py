"""A real uvicorn server on a free loopback port, in a thread of the test process, and checks
that the ``openai`` SDK's parsed objects carry every field their type requires."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pydantic
import uvicorn
from fastapi import FastAPI


@contextlib.contextmanager
def live_server(app: FastAPI, timeout_s: float = 20.0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (port 0: the OS picks a free one); yield its base URL
    (``http://127.0.0.1:PORT``) once uvicorn is accepting connections; stop it afterwards."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)


def client(base_url: str, key: str) -> openai.OpenAI:
    """The SDK as a user would build it: base URL and key changed, nothing else."""
    return openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=120)


NO_KEY = {"Authorization": openai.Omit()}  # extra_headers: send no Authorization header


def complete(obj: Any) -> Any:
    """Assert that an SDK object (or a page of them) has every field its type requires, with
    values of the right types: the fields the server sent (``exclude_unset``) are validated
    again, strictly, by the SDK's own pydantic type. A missing required field or a wrongly
    typed one raises. Returns ``obj``."""
    if hasattr(obj, "has_next_page"):  # an SDK page: its items
        for item in obj.data:
            complete(item)
        return obj
    if isinstance(obj, list):
        for item in obj:
            complete(item)
        return obj
    assert isinstance(obj, pydantic.BaseModel), f"not an SDK object: {obj!r}"
    sent = obj.model_dump(mode="json", by_alias=True, exclude_unset=True, warnings=False)
    type(obj).model_validate(sent, strict=False)
    missing = required_missing(obj)
    assert not missing, f"{type(obj).__name__} lacks required fields: {missing}"
    return obj


def required_missing(obj: Any, where: str = "") -> list[str]:
    """Required fields of ``obj`` (recursively) that the server did not send."""
    out: list[str] = []
    if isinstance(obj, pydantic.BaseModel):
        for name, field in type(obj).model_fields.items():
            if field.is_required() and name not in obj.model_fields_set:
                out.append(f"{where}{field.alias or name}")
            elif name in obj.model_fields_set:
                out += required_missing(getattr(obj, name), f"{where}{field.alias or name}.")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += required_missing(v, f"{where}{i}.")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out += required_missing(v, f"{where}{k}.")
    return out
