"""``/v1/embeddings``: OpenAI's embeddings endpoint over a catalog embedding model.

Vectors are unit length; ``dimensions`` truncates and re-normalises (Matryoshka-style, as OpenAI's
``text-embedding-3`` models do); ``base64`` is little-endian float32, as the openai SDK decodes
(the SDK asks for base64 by default). Inputs longer than the model's window are refused rather
than silently truncated, as OpenAI does.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from afinar.errors import ContextLengthExceeded, InvalidRequest
from afinar.server.common import Auth
from afinar.server.schemas import EmbeddingRequest

router = APIRouter(dependencies=[Auth])
MAX_INPUTS = 2048  # OpenAI's limit per request


def _texts(value: Any) -> list[str]:
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise InvalidRequest("input must not be empty", param="input")
    if not all(isinstance(t, str) for t in texts):
        raise InvalidRequest("token arrays are not supported as input: send text",
                             code="unsupported_input", param="input")
    if len(texts) > MAX_INPUTS:
        raise InvalidRequest(f"at most {MAX_INPUTS} inputs per request", param="input")
    for i, t in enumerate(texts):
        if not t:
            raise InvalidRequest(f"input[{i}] is empty", param="input")
    return texts


def _embed(model_id: str | None, texts: list[str], dimensions: int | None, settings
           ) -> tuple[str, np.ndarray, int]:
    from afinar.rag.embeddings import get_embedder

    emb = get_embedder(model_id, settings)
    counts = emb.count_tokens(texts)
    for i, n in enumerate(counts):
        if n > emb.max_tokens:
            raise ContextLengthExceeded(
                f"input[{i}] has {n} tokens; {emb.model_id} embeds at most {emb.max_tokens}: "
                "split the text into chunks", param="input")
    if dimensions is not None and dimensions > emb.dimensions:
        raise InvalidRequest(f"dimensions must be at most {emb.dimensions} for {emb.model_id}",
                             code="invalid_value", param="dimensions")
    vectors = emb.encode(texts)
    if dimensions is not None and dimensions < emb.dimensions:
        vectors = vectors[:, :dimensions]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
    return emb.model_id, vectors.astype("<f4", copy=False), sum(counts)


@router.post("/embeddings")
async def create_embeddings(req: EmbeddingRequest, request: Request) -> dict[str, Any]:
    texts = _texts(req.input)
    model_id, vectors, tokens = await run_in_threadpool(
        _embed, req.model, texts, req.dimensions, request.app.state.settings)
    if req.encoding_format == "base64":
        rows: list[Any] = [base64.b64encode(v.tobytes()).decode("ascii") for v in vectors]
    else:
        rows = [v.tolist() for v in vectors]
    return {"object": "list", "model": model_id,
            "data": [{"object": "embedding", "index": i, "embedding": e}
                     for i, e in enumerate(rows)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
