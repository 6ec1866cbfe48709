"""``POST /v1/fine_tuning/alpha/graders/validate`` and ``/run``: OpenAI's grader endpoints over
``afinar.graders``.

``validate`` takes ``{"grader": {...}}`` and echoes the grader; ``run`` takes ``{"grader",
"item", "model_sample"}`` and answers ``{"reward", "sub_rewards",
"model_grader_token_usage_per_model", "metadata": {name, type, execution_time, scores,
sampled_model_name, token_usage, errors}}`` (``afinar.graders.run_object``). A malformed body or
grader is a 400 with OpenAI's error object naming the field (``grader.graders.x.operation``).
Judge models are the server's (its model cache) and must be visible to the key's project.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from afinar.graders import Grader, load_grader, run_object, sample_from_text
from afinar.server.common import Auth, Caller, require_model
from afinar.server.schemas import Strict

router = APIRouter(dependencies=[Auth])
MAX_SAMPLE = 1 << 20  # characters


class ValidateGraderRequest(Strict):
    grader: dict[str, Any]


class RunGraderRequest(Strict):
    grader: dict[str, Any]
    model_sample: str = Field(max_length=MAX_SAMPLE)
    item: dict[str, Any] | None = None


def _grader(request: Request, spec: dict[str, Any]) -> Grader:
    settings = request.app.state.settings
    cache = request.app.state.models
    g = load_grader(spec, model_loader=lambda m: cache.get(m, settings=settings),
                    settings=settings, check_models=True)
    for model in g.models():
        require_model(request, model)
    return g


@router.post("/fine_tuning/alpha/graders/validate")
async def validate_grader(req: ValidateGraderRequest, request: Request,
                          who: Caller = Auth) -> dict:
    g = await run_in_threadpool(_grader, request, req.grader)
    return {"grader": g.to_dict()}


@router.post("/fine_tuning/alpha/graders/run")
async def run_grader(req: RunGraderRequest, request: Request, who: Caller = Auth) -> dict:
    g = await run_in_threadpool(_grader, request, req.grader)
    result = await run_in_threadpool(g.grade, sample_from_text(req.model_sample), req.item or {})
    return run_object(result)
