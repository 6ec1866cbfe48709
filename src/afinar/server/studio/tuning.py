"""Fine-tune: the launch form (with what ``auto`` resolves to and an estimate), and a job's page
with live curves and events (server-sent events from ``afinar.tuning.Jobs``).

The form posts to the API (``POST /v1/fine_tuning/jobs``); the estimate is ``afinar.tuning.
resolve`` (what the worker decides) over the validator's count of examples and tokens; the time
is that token count over the throughput the last finished job on the same base measured."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from afinar.errors import AfinarError, InvalidRequest
from afinar.server import routes_files, routes_fine_tuning
from afinar.server.common import Caller, error_response, readable_file
from afinar.server.studio.datasets import chat_models, pick_model
from afinar.server.studio.render import error_page, page, pydantic_message, signed_in
from afinar.store.files import Files
from afinar.tuning import METHODS, Hyperparameters, Jobs, get_method, resolve
from afinar.tuning.serialize import event_object

router = APIRouter(include_in_schema=False)
TERMINAL = {"succeeded", "failed", "cancelled"}
POLL_S = 0.5


@router.get("/fine-tune", response_class=HTMLResponse)
async def form(request: Request, training_file: str | None = None,
               model: str | None = None) -> HTMLResponse:
    s, who = signed_in(request)
    files = (await routes_files.list_files(request, "fine-tune", None, 10000, "desc", who)
             )["data"]
    return page(request, "finetune.html", who, s, files=files,
                models=chat_models(request, who), model=pick_model(request, who, model),
                methods=METHODS.names(), training_file=training_file)


def _throughput(request: Request, who: Caller, model: str) -> tuple[float, str] | None:
    """Tokens per second measured by the newest succeeded job on ``model`` the caller sees."""
    jobs = routes_fine_tuning.list_jobs(request, None, 100, who)["data"]
    store = Jobs(request.app.state.settings)
    for j in jobs:
        if j["model"] != model or j["status"] != "succeeded":
            continue
        rates = [e.data["tokens_per_second"] for e in store.events(j["id"])
                 if e.type == "metrics" and (e.data or {}).get("tokens_per_second")]
        if rates:
            return sum(rates) / len(rates), j["id"]
    return None


def estimate(request: Request, who: Caller, q: dict[str, str]) -> dict[str, Any]:
    from afinar.data import validate_file
    from afinar.models import Catalog, load_tokenizer

    model, file_id = q.get("model") or "", q.get("training_file") or ""
    if not file_id:
        raise InvalidRequest("choose a training file", param="training_file")
    files = Files(request.app.state.settings)
    readable_file(who, files, file_id, "training_file")
    info = Catalog(request.app.state.settings).get(model)
    method = get_method(q.get("method") or "lora")
    try:
        hp = Hyperparameters(**{k: q[k] for k in ("n_epochs", "batch_size",
                                                  "learning_rate_multiplier")
                                if q.get(k) not in (None, "")})
    except ValidationError as e:
        raise InvalidRequest(pydantic_message(e), param="hyperparameters") from None
    r = validate_file(files.path(file_id), load_tokenizer(info), model=model,
                      max_seq_len=info.context_length)
    if not r.n_examples:
        raise InvalidRequest("the training file has no valid example", param="training_file")
    res = resolve(hp, r.n_examples, method.base_lr, info.context_length or 2048,
                  objective=method.objective_class().hyperparameters)
    tokens = (r.stats.get("total_tokens") or 0) * res.n_epochs
    out = {"examples": r.n_examples, "n_epochs": res.n_epochs, "batch_size": res.batch_size,
           "learning_rate_multiplier": res.learning_rate_multiplier,
           "learning_rate": res.learning_rate, "steps_per_epoch": res.steps_per_epoch,
           "total_steps": res.total_steps, "tokens": tokens, "seconds": None, "measured_by": None}
    rate = _throughput(request, who, model)
    if rate and tokens:
        out["seconds"], out["measured_by"] = tokens / rate[0], rate[1]
    return out


@router.get("/fine-tune/estimate")
async def estimate_route(request: Request) -> JSONResponse:
    _, who = signed_in(request)
    try:
        return JSONResponse(await run_in_threadpool(estimate, request, who,
                                                    dict(request.query_params)))
    except AfinarError as e:
        return error_response(e.message, e.http_status, e.code, e.param)


def job_context(request: Request, who: Caller, job_id: str) -> dict[str, Any]:
    from afinar.models import Catalog
    from afinar.models.finetuned import read_manifest

    job = routes_fine_tuning.retrieve_job(job_id, request, who)
    ckpts = routes_fine_tuning.list_checkpoints(job_id, request, None, 100, who)["data"]
    manifest = None
    if job.get("fine_tuned_model"):
        try:
            manifest = read_manifest(Catalog(request.app.state.settings)
                                     .get(job["fine_tuned_model"]).path) or None
        except AfinarError:
            manifest = None
    return {"job": job, "checkpoints": ckpts, "manifest": manifest,
            "manifest_json": json.dumps(manifest, indent=1, default=str) if manifest else None}


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(job_id: str, request: Request) -> HTMLResponse:
    s, who = signed_in(request)
    try:
        ctx = await run_in_threadpool(job_context, request, who, job_id)
    except AfinarError as e:
        return error_page(request, who, s, "Job", e)
    return page(request, "job.html", who, s, **ctx)


def _sse(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


@router.get("/jobs/{job_id}/stream")
async def job_stream(job_id: str, request: Request) -> Any:
    """Server-sent events: every job event (``event``), the job when it changes (``job``),
    the checkpoints when they change (``checkpoints``); ``end`` once the job is over and all
    its events are sent. ``Last-Event-ID`` (EventSource's reconnect) resumes after it."""
    _, who = signed_in(request)
    try:
        routes_fine_tuning.retrieve_job(job_id, request, who)
    except AfinarError as e:
        return error_response(e.message, e.http_status, e.code, e.param)
    store = Jobs(request.app.state.settings)
    try:
        after = int(request.headers.get("last-event-id") or 0)
    except ValueError:
        after = 0

    async def events() -> AsyncIterator[str]:
        nonlocal after
        last_job = last_ckpts = None
        while not await request.is_disconnected():
            job = await run_in_threadpool(routes_fine_tuning.retrieve_job, job_id, request, who)
            for e in await run_in_threadpool(store.events, job_id, after):
                after = e.seq
                yield f"id: {e.seq}\n" + _sse("event", event_object(e))
            if job != last_job:
                last_job = job
                yield _sse("job", job)
            ckpts = (await run_in_threadpool(routes_fine_tuning.list_checkpoints, job_id,
                                             request, None, 100, who))["data"]
            if ckpts != last_ckpts:
                last_ckpts = ckpts
                yield _sse("checkpoints", ckpts)
            if job["status"] in TERMINAL:
                ctx = await run_in_threadpool(job_context, request, who, job_id)
                yield _sse("end", {"status": job["status"], "manifest": ctx["manifest"]})
                return
            await asyncio.sleep(POLL_S)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
