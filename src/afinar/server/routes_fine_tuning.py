"""OpenAI's fine-tuning API over ``afinar.tuning.Jobs``: create, list, retrieve, cancel, pause,
resume, events and checkpoints, in OpenAI's shapes (``afinar.tuning.serialize``).

``method.type`` is an objective's OpenAI type, as the registries say (``method_for_type``):
OpenAI's ``supervised`` (trained as afinar's ``lora``), ``dpo`` and ``reinforcement`` when a method
trains them, afinar's extensions ``kto``, ``orpo`` and ``simpo`` in the same shape
(``{"type": "kto", "kto": {"hyperparameters": {...}}}``), or any afinar method name (``lora``,
``dora``, ``qlora``, ``full``, ``prompt_tuning``, ``continued_pretraining``, ...);
``method[type]`` holds ``hyperparameters`` and, for afinar methods, the method's options. The
deprecated top-level ``hyperparameters`` still work; values under ``method`` win. Training runs
in a worker process, started here when none runs (``app.state.spawn_workers = False`` turns
that off, for tests or an external worker). Before a
job exists, ``Jobs.create`` refuses (400) a method the data's format does not fit (``dpo`` on chat
rows, SFT on preference rows) and a validation file with errors; as with OpenAI, the training
file's full check runs in the job (``validating_files``), and a rejected file makes the job
``failed`` with ``error.param = "training_file"``.

Access (``afinar.store.access``): a job belongs to the creating key's project; it is visible to
that key, keys sharing one of its groups and the project's admins (to others: 404), and only
its creator or an admin may cancel, pause or resume it (403).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from afinar.errors import InvalidRequest, NotFound
from afinar.server.common import Auth, Caller, page, readable_file
from afinar.store.access import may_see_job
from afinar.store.files import Files
from afinar.store.tables import JobRecord
from afinar.tuning import Jobs, spawn_worker
from afinar.tuning.hparams import parse_hyperparameters
from afinar.tuning.methods import method_for_type
from afinar.tuning.serialize import checkpoint_object, event_object, job_object

router = APIRouter(dependencies=[Auth])

_METADATA_KEY = re.compile(r"^metadata\[(.+)\]$")


class CreateJob(BaseModel):
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = Field(None, ge=0, le=2147483647)
    metadata: dict[str, str] | None = None
    method: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    integrations: list[dict[str, Any]] | None = None


def _method(body: CreateJob) -> tuple[dict[str, Any], dict[str, Any]]:
    """OpenAI's ``method`` (and old ``hyperparameters``) -> afinar's method and hyperparameters."""
    m = dict(body.method or {})
    kind = m.get("type") or "supervised"
    if not isinstance(kind, str):
        raise InvalidRequest("method.type must be a string", param="method.type")
    name = method_for_type(kind)  # an unknown one: Jobs.create's error, naming the known
    sub = m.get(kind) or {}
    if not isinstance(sub, dict):
        raise InvalidRequest(f"method.{kind} must be an object", param=f"method.{kind}")
    options = dict(sub)
    nested = options.pop("hyperparameters", None) or {}
    if not isinstance(nested, dict):
        raise InvalidRequest(f"method.{kind}.hyperparameters must be an object",
                             param=f"method.{kind}.hyperparameters")
    hp = {**(body.hyperparameters or {}), **nested}
    from afinar.tuning.methods import METHODS

    if name in METHODS:  # shapes only the method knows (OpenAI's RFT hyperparameters)
        options, hp = METHODS.get(name).from_openai(options, hp)
    parse_hyperparameters(hp)  # an unknown name or a bad value: one error naming it
    return {"type": name, name: options}, hp


def _file(files: Files, file_id: str, param: str, who: Caller) -> None:
    try:
        rec = readable_file(who, files, file_id, param)  # another key's file does not exist
    except NotFound:
        raise NotFound(f"no file {file_id!r}: upload it with POST /v1/files "
                       f"(purpose fine-tune)", param=param) from None
    if rec.purpose != "fine-tune":
        raise InvalidRequest(f"file {file_id} has purpose {rec.purpose!r}; a {param} must be "
                             f"uploaded with purpose 'fine-tune'", code=f"invalid_{param}",
                             param=param)


def _spawn(request: Request) -> None:
    if getattr(request.app.state, "spawn_workers", True):
        spawn_worker(request.app.state.settings)


def _jobs(request: Request) -> Jobs:
    return Jobs(request.app.state.settings)


@router.post("/fine_tuning/jobs")
def create_job(body: CreateJob, request: Request, who: Caller = Auth) -> dict:
    if body.integrations:
        raise InvalidRequest("integrations (wandb) are not supported by afinar; follow a job "
                             "with its events and metrics file instead", param="integrations")
    method, hp = _method(body)
    files = Files(request.app.state.settings)
    _file(files, body.training_file, "training_file", who)
    if body.validation_file:
        _file(files, body.validation_file, "validation_file", who)
    try:
        job = _jobs(request).create(model=body.model, training_file=body.training_file,
                                    validation_file=body.validation_file, method=method,
                                    hyperparameters=hp, suffix=body.suffix, seed=body.seed,
                                    metadata=body.metadata, owner={
                                        "project_id": who.project, "owner_key_id": who.key_id,
                                        "owner_groups": sorted(who.groups)})
    except InvalidRequest as e:  # a method option's error, named where the request put it
        from afinar.tuning.methods import METHODS

        name = method["type"]
        known = METHODS.get(name).config_cls.model_fields if name in METHODS else {}
        if e.param and e.param.split(".")[0] in known:
            e.param = f"method.{(body.method or {}).get('type') or 'supervised'}.{e.param}"
        raise
    _spawn(request)
    return job_object(_jobs(request).get(job.id))


@router.get("/fine_tuning/jobs")
def list_jobs(request: Request, after: str | None = None, limit: int = 20,
              who: Caller = Auth) -> dict:
    wanted: dict[str, str] = {}
    null_metadata = False
    for key, value in request.query_params.multi_items():
        if key == "metadata" and value == "null":
            null_metadata = True
        elif m := _METADATA_KEY.match(key):
            wanted[m.group(1)] = value
    limit = max(1, min(limit, 100))
    jobs = [j for j in _jobs(request).list(limit=10**9) if may_see_job(who, j)
            and (not null_metadata or j.metadata_ is None)
            and all((j.metadata_ or {}).get(k) == v for k, v in wanted.items())]
    return page([job_object(j) for j in jobs], after, limit)


def _job(request: Request, job_id: str, who: Caller, change: str | None = None) -> JobRecord:
    """The job if the caller may see it (else 404, as an unknown id); with ``change``, only
    its creator or an admin may (403)."""
    try:
        job = _jobs(request).get(job_id)
    except NotFound:
        job = None
    if job is None or not may_see_job(who, job):
        raise NotFound(f"no fine-tuning job {job_id!r}", param="fine_tuning_job_id")
    if change:
        who.require_owner(job.owner_key_id, f"{change} fine-tuning job {job_id}")
    return job


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}")
def retrieve_job(fine_tuning_job_id: str, request: Request, who: Caller = Auth) -> dict:
    return job_object(_job(request, fine_tuning_job_id, who))


@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/cancel")
def cancel_job(fine_tuning_job_id: str, request: Request, who: Caller = Auth) -> dict:
    _job(request, fine_tuning_job_id, who, "cancel")
    return job_object(_jobs(request).cancel(fine_tuning_job_id))


@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/pause")
def pause_job(fine_tuning_job_id: str, request: Request, who: Caller = Auth) -> dict:
    _job(request, fine_tuning_job_id, who, "pause")
    return job_object(_jobs(request).pause(fine_tuning_job_id))


@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/resume")
def resume_job(fine_tuning_job_id: str, request: Request, who: Caller = Auth) -> dict:
    _job(request, fine_tuning_job_id, who, "resume")
    job = _jobs(request).resume(fine_tuning_job_id)
    _spawn(request)
    return job_object(job)


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}/events")
def list_events(fine_tuning_job_id: str, request: Request, after: str | None = None,
                limit: int = 20, who: Caller = Auth) -> dict:
    """Newest first, as OpenAI lists them; ``after`` is the last event id of the previous page."""
    _job(request, fine_tuning_job_id, who)
    events = _jobs(request).events(fine_tuning_job_id)
    return page([event_object(e) for e in reversed(events)], after, limit)


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints")
def list_checkpoints(fine_tuning_job_id: str, request: Request, after: str | None = None,
                     limit: int = 10, who: Caller = Auth) -> dict:
    jobs = _jobs(request)
    job = _job(request, fine_tuning_job_id, who)
    items = [checkpoint_object(c, job) for c in jobs.checkpoints(fine_tuning_job_id)]
    return page(items, after, limit)
