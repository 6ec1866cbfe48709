"""Shared tokenizers and models under many threads.

A Hugging Face fast tokenizer keeps its padding/truncation settings in the Rust object and each
call sets them: counting tokens (no padding) while another thread encodes a padded batch made
that batch fail with "Unable to create tensor ... padding" (before the fix, this loop without
the embedder's lock failed in 3 of 16 threads). The chat path renders and decodes with the same
settings on every call (no padding, no truncation), and generation runs under the model's lock.
"""

from __future__ import annotations

import json
import shutil

import httpx

from afinar.models import Catalog
from afinar.server.app import create_app
from tests.helpers import all_at_once
from tests.live_server import live_server

THREADS = 16


def _texts(i: int, k: int) -> list[str]:
    return ["word " * (1 + (i * 7 + k) % 40), "short", "a somewhat longer sentence " * (1 + i % 5)]


def test_embedder_from_16_threads(home):
    from afinar.rag.embeddings import get_embedder

    emb, errors, shapes = get_embedder(), [], set()

    def work(i: int) -> None:
        try:
            for k in range(8):
                texts = _texts(i, k)
                counts = emb.count_tokens(texts)
                assert counts[1] == 3  # [CLS] short [SEP]
                shapes.add(emb.encode(texts).shape)
        except Exception as e:  # noqa: BLE001  any failure is the test's finding
            errors.append(repr(e)[:300])

    all_at_once(work, list(range(THREADS)))
    assert errors == [] and shapes == {(3, emb.dimensions)}


def test_server_embeddings_and_chat_from_16_clients(home, tiny_model_template, tmp_path):
    model = shutil.copytree(tiny_model_template, tmp_path / "tiny")
    cfg = json.loads((model / "config.json").read_text())
    cfg["max_position_embeddings"] = 1024
    (model / "config.json").write_text(json.dumps(cfg))
    Catalog().add("tiny", model)
    app = create_app(auth=False)
    failures: list[str] = []
    with live_server(app) as url:
        vs = httpx.post(f"{url}/v1/vector_stores", json={"name": "s"}).json()["id"]

        def client(i: int) -> None:
            with httpx.Client(base_url=url, timeout=120) as http:
                for k in range(3):
                    if (i + k) % 3 == 0:
                        r = http.post("/v1/chat/completions", json={
                            "model": "tiny", "max_tokens": 4,
                            "messages": [{"role": "user", "content": "hi " * (i + 1)}]})
                    elif (i + k) % 3 == 1:
                        r = http.post(f"/v1/vector_stores/{vs}/search", json={"query": "q"})
                    else:
                        r = http.post("/v1/embeddings", json={"input": _texts(i, k)})
                    if r.status_code != 200:
                        failures.append(f"{r.request.url.path}: {r.status_code} {r.text[:200]}")

        all_at_once(client, list(range(THREADS)))
        assert httpx.get(f"{url}/health").status_code == 200
    assert failures == []
