"""Sign-in, sign-out, the overview and the keys page."""

from __future__ import annotations

import hmac
import os
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from afinar.errors import AfinarError
from afinar.server import routes_fine_tuning, routes_keys, routes_models, routes_vector_stores
from afinar.server.studio.render import error_page, form_check, page, pydantic_message, signed_in
from afinar.server.common import Forbidden
from afinar.server.studio.session import COOKIE, TTL_S, caller_of, current, sessions, \
    sign_in

router = APIRouter(include_in_schema=False)
SIGNIN_COOKIE = "afinar_signin"


def _safe_next(value: str | None) -> str:
    """Only a path of this site (never ``//host`` or a scheme) after sign-in."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request, next: str | None = None) -> HTMLResponse:
    from afinar.store.keys import ApiKeys

    local = not request.app.state.auth and not ApiKeys(request.app.state.settings).any()
    return _signin_form(request, status_code=200, next=_safe_next(next), local=local)


def _signin_form(request: Request, status_code: int, **context: Any) -> HTMLResponse:
    """The sign-in form with its own CSRF token (a cookie the form must repeat), so no other
    site can sign a browser in with a key of its choosing."""
    token = secrets.token_urlsafe(24)
    resp = page(request, "signin.html", None, None, status_code=status_code,
                signin_csrf=token, **context)
    resp.set_cookie(SIGNIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
                    secure=request.url.scheme == "https", path="/signin")
    return resp


@router.post("/signin")
async def signin(request: Request) -> Any:
    form = await request.form()
    nxt = _safe_next(form.get("next"))
    sent, kept = str(form.get("csrf") or ""), request.cookies.get(SIGNIN_COOKIE) or ""
    try:
        if not sent or not hmac.compare_digest(sent, kept):
            raise Forbidden("the sign-in form expired or came from another site: sign in "
                            "again from this page", code="csrf_failed")
        token, session = await run_in_threadpool(sign_in, request, str(form.get("key") or ""))
        request.state.caller = await run_in_threadpool(caller_of, request, session)  # audit
    except AfinarError as e:
        return _signin_form(request, status_code=e.http_status, error=e.message, next=nxt,
                            local=False)
    resp = RedirectResponse(nxt, status_code=303)
    resp.delete_cookie(SIGNIN_COOKIE, path="/signin")
    resp.set_cookie(COOKIE, token, max_age=TTL_S, httponly=True, samesite="strict",
                    secure=request.url.scheme == "https", path="/")
    return resp


@router.post("/signout")
async def signout(request: Request) -> RedirectResponse:
    form = await request.form()
    if current(request) is not None:
        form_check(request, form)
    sessions(request).close(request.cookies.get(COOKIE))
    resp = RedirectResponse("/signin", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


def machine() -> dict[str, Any]:
    """CPU, memory and GPU of this host, as the server sees them."""
    out: dict[str, Any] = {"cpus": os.cpu_count(), "load": os.getloadavg()[0]}
    try:
        info = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines()
                    if ":" in line)
        out["mem_total"] = int(info["MemTotal"].split()[0]) * 1024
        out["mem_available"] = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    gpus = []
    try:
        import torch

        for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
            free, total = torch.cuda.mem_get_info(i)
            gpus.append({"name": torch.cuda.get_device_name(i), "total": total, "free": free})
    except Exception:  # no driver, no CUDA build: no GPU to show
        gpus = []
    out["gpus"] = gpus
    return out


def worker_state(settings, jobs: list[dict]) -> str:
    """The fine-tuning worker: alive (the pid in ``worker.lock`` lives) and what it trains."""
    from afinar.processes import pid_alive

    try:
        pid = int((settings.home / "worker.lock").read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    running = [j["id"] for j in jobs if j["status"] == "running"]
    queued = sum(j["status"] in ("queued", "validating_files") for j in jobs)
    if not pid_alive(pid):
        return "not running" + (f" ({queued} job{'s' * (queued != 1)} queued: it starts "
                                "with the next job created here)" if queued else
                                " (it starts when a job is created)")
    return (f"running (pid {pid})" + (f", training {', '.join(running)}" if running else
                                       ", idle") + (f", {queued} queued" if queued else ""))


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request) -> HTMLResponse:
    s, who = signed_in(request)
    models = (await routes_models.list_models(request, who))["data"]
    jobs = (await run_in_threadpool(routes_fine_tuning.list_jobs, request, None, 100, who)
            )["data"]
    by_model = {j["fine_tuned_model"]: j for j in jobs if j.get("fine_tuned_model")}
    stores = (await run_in_threadpool(routes_vector_stores.list_stores, request, None, None,
                                      100, "desc", who))["data"]
    from afinar.evals.runner import list_runs

    try:
        runs = await run_in_threadpool(list_runs, request.app.state.settings,
                                       None if who.owner else who.project)
        evals = [dict(id=r.id, **{k: r.meta.get(k) for k in ("status", "created_at")})
                 for r in runs]
    except AfinarError:
        evals = []
    return page(request, "overview.html", who, s, models=models, jobs=jobs[:20],
                by_model=by_model, stores=stores, evals=evals[:20],
                machine=await run_in_threadpool(machine),
                worker=worker_state(request.app.state.settings, jobs))


@router.get("/keys", response_class=HTMLResponse)
def keys_page(request: Request, created: str | None = None) -> HTMLResponse:
    s, who = signed_in(request)
    try:
        keys = routes_keys.list_keys(request, who)["data"]
    except AfinarError as e:
        return error_page(request, who, s, "Keys", e)
    return page(request, "keys.html", who, s, keys=keys, new=None)


@router.post("/keys", response_class=HTMLResponse)
async def keys_create(request: Request) -> HTMLResponse:
    form = await request.form()
    s, who = form_check(request, form)
    new, error = None, None
    try:
        body = routes_keys.CreateKey(name=str(form.get("name") or "").strip() or " ",
                                     groups=str(form.get("groups") or ""),
                                     admin=form.get("admin") == "on")
        new = await run_in_threadpool(routes_keys.create_key, body, request, who)
    except AfinarError as e:
        if e.http_status == 403:
            return error_page(request, who, s, "Keys", e, status_code=403)
        error = e.message
    except ValidationError as e:
        error = pydantic_message(e)
    keys = routes_keys.list_keys(request, who)["data"]
    return page(request, "keys.html", who, s, keys=keys, new=new, error=error,
                status_code=200 if error is None else 400)


@router.post("/keys/{key_id}/update", response_class=HTMLResponse)
async def keys_update(key_id: str, request: Request) -> Any:
    """A key's groups and admin flag, changed in its row (the API's ``POST /v1/keys/{id}``)."""
    form = await request.form()
    s, who = form_check(request, form)
    try:
        body = routes_keys.UpdateKey(groups=str(form.get("groups") or ""),
                                     admin=form.get("admin") == "on")
        await run_in_threadpool(routes_keys.update_key, key_id, body, request, who)
    except AfinarError as e:
        return error_page(request, who, s, "Keys", e)
    return RedirectResponse("/keys", status_code=303)


@router.post("/keys/{key_id}/revoke", response_class=HTMLResponse)
async def keys_revoke(key_id: str, request: Request) -> Any:
    form = await request.form()
    s, who = form_check(request, form)
    try:
        await run_in_threadpool(routes_keys.revoke_key, key_id, request, who)
    except AfinarError as e:
        return error_page(request, who, s, "Keys", e)
    return RedirectResponse("/keys", status_code=303)
