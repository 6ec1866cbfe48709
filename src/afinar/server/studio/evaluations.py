"""Evaluations: launch a run (``afinar.evals.runner.run``, in a thread of the server, as
``afinar eval run`` does in the CLI), follow its progress, and read its report: the same HTML
as ``afinar eval report --html`` (``afinar.evals.report.render_html``).

A run belongs to the caller's project (``EvalConfig.project``); another project's run does not
exist here, as in ``afinar eval list --project``. Its files are the caller's readable files."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from afinar.errors import AfinarError, InvalidRequest
from afinar.server import routes_files, routes_vector_stores
from afinar.server.common import Caller, error_response, readable_file
from afinar.server.studio.datasets import chat_models
from afinar.server.studio.render import error_page, form_check, page, pydantic_message, signed_in
from afinar.store.files import Files

router = APIRouter(include_in_schema=False)
_LAUNCH = threading.Lock()  # one launch at a time finds its new run's id
START_WAIT_S = 30


def _project(who: Caller) -> str | None:
    return None if who.owner else who.project


def _runs(request: Request, who: Caller) -> list[dict[str, Any]]:
    from afinar.evals.runner import list_runs

    out = []
    for r in list_runs(request.app.state.settings, _project(who)):
        m = r.meta
        out.append({"id": r.id, "name": m.get("name"), "status": m["status"],
                    "created_at": m.get("created_at"), "error": m.get("error"),
                    "strategies": [s.get("type") for s in m["config"].get("strategies", [])]})
    return out


async def evals_context(request: Request, who: Caller) -> dict[str, Any]:
    from afinar.evals.metrics import METRICS
    from afinar.evals.strategies import STRATEGIES

    files = [f for f in (await routes_files.list_files(request, None, None, 10000, "desc",
                                                        who))["data"]
             if f["purpose"] in ("fine-tune", "user_data", "evals")]
    stores = (await run_in_threadpool(routes_vector_stores.list_stores, request, None, None,
                                      100, "desc", who))["data"]
    return {"runs": await run_in_threadpool(_runs, request, who), "files": files,
            "stores": stores, "models": chat_models(request, who),
            "strategies": STRATEGIES.names(), "metrics": METRICS.names()}


@router.get("/evals", response_class=HTMLResponse)
async def evals(request: Request) -> HTMLResponse:
    s, who = signed_in(request)
    return page(request, "evals.html", who, s, **await evals_context(request, who))


def _config(request: Request, who: Caller, form: Any):
    from afinar.evals.config import EvalConfig

    files = Files(request.app.state.settings)

    def path_of(param: str) -> str | None:
        fid = str(form.get(param) or "").strip()
        if not fid:
            return None
        readable_file(who, files, fid, param)
        return str(files.path(fid))

    test = path_of("test_file")
    if test is None:
        raise InvalidRequest("choose a test file (held-out chat JSONL)", param="test_file")
    raw: dict[str, Any] = {
        "name": str(form.get("name") or "").strip() or None, "project": who.project,
        "test_file": test, "train_file": path_of("train_file"),
        "model": str(form.get("model") or "").strip() or None,
        "knowledge_base": str(form.get("knowledge_base") or "").strip() or None,
        "strategies": [x.strip() for x in str(form.get("strategies") or "base").split(",")
                       if x.strip()],
        "metrics": [x.strip() for x in str(form.get("metrics") or "").split(",") if x.strip()]
        or None,
        "forgetting": form.get("forgetting") == "on",
        "generation": {"temperature": 0, "max_tokens": int(form.get("max_tokens") or 64)},
    }
    if str(form.get("limit") or "").strip():
        raw["limit"] = int(form.get("limit"))
    raw = {k: v for k, v in raw.items() if v is not None}
    try:
        return EvalConfig.model_validate(raw)
    except ValidationError as e:
        raise InvalidRequest(pydantic_message(e), param="config") from None


def launch(request: Request, who: Caller, form: Any) -> str:
    """Start the run in a thread; return its id once its folder exists."""
    from afinar.evals.runner import list_runs, run

    config = _config(request, who, form)
    settings, cache = request.app.state.settings, request.app.state.models
    failed: list[BaseException] = []

    def work() -> None:
        try:
            run(config, settings=settings, cache=cache)
        except BaseException as e:  # the run's status says failed, with the error
            failed.append(e)

    with _LAUNCH:
        before = {r.id for r in list_runs(settings)}
        threading.Thread(target=work, name="studio-eval", daemon=True).start()
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            new = [r for r in list_runs(settings) if r.id not in before
                   and r.meta.get("pid") in (os.getpid(), None)]
            if new:
                return new[0].id
            if failed:
                e = failed[0]
                raise e if isinstance(e, AfinarError) else InvalidRequest(
                    f"the evaluation could not start: {type(e).__name__}: {e}")
            time.sleep(0.05)
    raise InvalidRequest("the evaluation did not start within 30 s; see the server log")


@router.post("/evals", response_class=HTMLResponse)
async def evals_launch(request: Request) -> Any:
    form = await request.form()
    s, who = form_check(request, form)
    try:
        run_id = await run_in_threadpool(launch, request, who, form)
    except (AfinarError, ValueError) as e:
        msg = e.message if isinstance(e, AfinarError) else f"limit and max tokens are numbers ({e})"
        return page(request, "evals.html", who, s, status_code=400, launch_error=msg,
                    **await evals_context(request, who))
    return RedirectResponse(f"/evals/{run_id}", status_code=303)


def progress(request: Request, who: Caller, run_id: str) -> dict[str, Any]:
    from afinar.evals.runner import get_run

    ev = get_run(run_id, request.app.state.settings, _project(who))
    meta = ev.meta
    config = meta["config"]
    n_strategies = len(config.get("strategies") or [1])
    answered = sum(len(v) for v in ev.predictions().values())
    total = None
    try:
        with open(config["test_file"], encoding="utf-8") as f:
            cases = sum(1 for line in f if line.strip())
        total = min(cases, config.get("limit") or cases) * n_strategies
    except OSError:
        pass
    return {"id": ev.id, "name": meta.get("name"), "status": meta["status"],
            "error": meta.get("error"), "answered": answered, "total": total,
            "created_at": meta.get("created_at"), "finished_at": meta.get("finished_at")}


@router.get("/evals/{run_id}/progress")
async def evals_progress(run_id: str, request: Request) -> JSONResponse:
    _, who = signed_in(request)
    try:
        return JSONResponse(await run_in_threadpool(progress, request, who, run_id))
    except AfinarError as e:
        return error_response(e.message, e.http_status, e.code, e.param)


@router.get("/evals/{run_id}", response_class=HTMLResponse)
async def eval_page(run_id: str, request: Request) -> HTMLResponse:
    s, who = signed_in(request)
    try:
        p = await run_in_threadpool(progress, request, who, run_id)
    except AfinarError as e:
        return error_page(request, who, s, "Evaluation", e)
    return page(request, "eval.html", who, s, run=p)


@router.get("/evals/{run_id}/report.html", response_class=HTMLResponse)
async def eval_report(run_id: str, request: Request) -> HTMLResponse:
    """The report of ``afinar eval report --html``, as is."""
    s, who = signed_in(request)
    from afinar.evals.report import render_html
    from afinar.evals.runner import get_run

    try:
        ev = get_run(run_id, request.app.state.settings, _project(who))
        summary = await run_in_threadpool(ev.summary)
    except AfinarError as e:
        return error_page(request, who, s, "Evaluation", e)
    return HTMLResponse(render_html(summary), headers={
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                   "script-src 'unsafe-inline'; "
                                   "img-src data:; frame-ancestors 'self'"})
