"""Datasets: upload a file and read the validator's report before anything trains.

An upload is kept as a ``user_data`` file (so its errors can be shown: the API refuses a
fine-tune upload with errors); the report is ``afinar.data.validate_file`` against the chosen
model's tokenizer, the loss-mask preview ``afinar.data.preview``, the PII findings
``afinar.data.scan_file``. "Use for training" makes a ``fine-tune`` file from it through the
API's own upload check; redaction, splitting and CSV conversion write new files with the
``afinar.data`` functions."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from afinar.errors import AfinarError, InvalidRequest
from afinar.server import routes_files
from afinar.server.common import Caller, readable_file
from afinar.server.studio.render import error_page, form_check, page, signed_in
from afinar.store.files import MAX_BYTES, Files

router = APIRouter(include_in_schema=False)
DRAFT, TRAIN = "user_data", "fine-tune"
HIST_MAX_EXAMPLES, HIST_BINS, PREVIEW_N, PII_SHOWN = 5000, 12, 3, 50


def chat_models(request: Request, who: Caller) -> list[str]:
    from afinar.models import Catalog
    from afinar.server.common import model_visible

    return [m.id for m in Catalog(request.app.state.settings).list("chat")
            if m.available and model_visible(request, who, m.id)]


def pick_model(request: Request, who: Caller, wanted: str | None) -> str | None:
    models = chat_models(request, who)
    if wanted in models:
        return wanted
    default = request.app.state.settings.default_model
    return default if default in models else (models[0] if models else None)


def _lines(path: Path, wanted: set[int], limit: int = 300) -> dict[int, str]:
    """The raw text of the wanted lines (1-based), cut to ``limit`` characters."""
    out: dict[int, str] = {}
    if not wanted:
        return out
    last = max(wanted)
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if n in wanted:
                out[n] = line.rstrip("\n")[:limit] + ("…" if len(line) > limit else "")
            if n >= last:
                break
    return out


def _histogram(path: Path, tok, fmt: str | None) -> dict[str, Any] | None:
    """Example lengths in tokens (the encoding training uses), binned, over the first
    ``HIST_MAX_EXAMPLES`` valid examples."""
    from afinar.data import encode_example

    lengths = [max(e.n_tokens for e in (enc if isinstance(enc, tuple) else (enc,)))
               for _, _, enc in _encoded(path, fmt, lambda ex: encode_example(tok, ex),
                                         HIST_MAX_EXAMPLES)]
    if not lengths:
        return None
    lo, hi = min(lengths), max(lengths)
    width = max(1, -(-(hi - lo + 1) // HIST_BINS))
    counts = [0] * (-(-(hi - lo + 1) // width))
    for n in lengths:
        counts[(n - lo) // width] += 1
    return {"bins": [{"lo": lo + i * width, "hi": lo + (i + 1) * width - 1, "n": c}
                     for i, c in enumerate(counts)], "max": max(counts), "n": len(lengths)}


def _preview(path: Path, tok, fmt: str | None) -> list[dict[str, Any]]:
    from afinar.data.preview import example_segments

    return [{"line": line, "format": ex.format, "sequences": seqs}
            for line, ex, seqs in _encoded(path, fmt, lambda ex: example_segments(tok, ex),
                                           PREVIEW_N)]


def _encoded(path: Path, fmt: str | None, encode, limit: int):
    """``(line, example, encode(example))`` of the first ``limit`` examples that parse and
    encode (rows with issues are the validator's report, not shown here)."""
    from afinar.data import iter_rows, parse_example
    from afinar.data.issues import Issue

    n = 0
    for item in iter_rows(path):
        if n >= limit:
            return
        if isinstance(item, Issue):
            continue
        ex, _ = parse_example(item.data, item.line, fmt)
        if ex is None:
            continue
        try:
            out = encode(ex)
        except AfinarError:
            continue
        n += 1
        yield item.line, ex, out


def report(request: Request, who: Caller, file_id: str, model: str | None) -> dict[str, Any]:
    from afinar.data import scan_file, validate_file
    from afinar.data.issues import Issue

    files = Files(request.app.state.settings)
    rec = readable_file(who, files, file_id)
    path = files.path(file_id)
    out: dict[str, Any] = {"file": routes_files.file_object(rec), "model": model}
    tok = info = None
    if model:
        from afinar.models import Catalog, load_tokenizer

        info = Catalog(request.app.state.settings).get(model)
        tok = load_tokenizer(info)
    r = validate_file(path, tok, model=model, max_seq_len=info.context_length if info else None)
    grouped: dict[str, list] = defaultdict(list)
    for e in r.errors:
        grouped[e.code].append(e)
    text = _lines(path, {e.line for e in r.errors + r.warnings if e.line})
    out.update(report=r, errors=dict(grouped), text=text, stats=r.stats,
               warning_lines=r.warning_lines())
    if tok is not None and rec.bytes:
        out["histogram"] = _histogram(path, tok, r.format)
        out["preview"] = _preview(path, tok, r.format)
    findings, n_findings = [], 0
    for f in scan_file(path):
        if isinstance(f, Issue):
            continue
        n_findings += 1
        if len(findings) < PII_SHOWN:
            findings.append(f.to_dict(masked=True))
    out.update(pii=findings, n_pii=n_findings, csv=rec.filename.lower().endswith(".csv"))
    return out


@router.get("/datasets", response_class=HTMLResponse)
async def datasets(request: Request) -> HTMLResponse:
    s, who = signed_in(request)
    listing = (await routes_files.list_files(request, None, None, 10000, "desc", who))["data"]
    mine = [f for f in listing if f["purpose"] in (DRAFT, TRAIN)]
    return page(request, "datasets.html", who, s, files=mine)


@router.get("/datasets/{file_id}", response_class=HTMLResponse)
async def dataset(file_id: str, request: Request, model: str | None = None) -> HTMLResponse:
    s, who = signed_in(request)
    model = pick_model(request, who, model)
    try:
        ctx = await run_in_threadpool(report, request, who, file_id, model)
    except AfinarError as e:
        return error_page(request, who, s, "Dataset", e)
    return page(request, "dataset.html", who, s, models=chat_models(request, who), **ctx)


def _store(request: Request, who: Caller, path: Path, name: str, purpose: str) -> dict:
    """A new file from ``path``, owned as an upload by ``who`` would be, through the API's
    own upload code (a fine-tune file is checked, and refused with its errors)."""
    files = Files(request.app.state.settings)
    with open(path, "rb") as fh:
        rec, details = routes_files._create(files, SimpleNamespace(file=fh, filename=name),
                                            purpose, MAX_BYTES, who)
    return routes_files.file_object(rec, details)


def _act(request: Request, who: Caller, file_id: str, action: str, form: Any) -> list[dict]:
    from afinar.data import convert_to_chat, redact_file, split_file

    files = Files(request.app.state.settings)
    rec = readable_file(who, files, file_id)
    src = files.path(file_id)
    stem = rec.filename.rsplit(".", 1)[0] or "data"
    with tempfile.TemporaryDirectory() as tmp:
        tmp_src = Path(tmp) / ("in." + (rec.filename.rsplit(".", 1)[-1] if "." in rec.filename
                                        else "jsonl"))
        tmp_src.write_bytes(src.read_bytes())  # the data functions read by file extension
        if action == "train":
            return [_store(request, who, tmp_src, rec.filename, TRAIN)]
        if action == "redact":
            dst = Path(tmp) / "redacted.jsonl"
            redact_file(tmp_src, dst)
            return [_store(request, who, dst, f"{stem}.redacted.jsonl", DRAFT)]
        if action == "convert":
            dst = Path(tmp) / "chat.jsonl"
            convert_to_chat(tmp_src, dst, system=str(form.get("system") or "") or None,
                            user_col=str(form.get("user_col") or "") or None,
                            assistant_col=str(form.get("assistant_col") or "") or None)
            return [_store(request, who, dst, f"{stem}.chat.jsonl", DRAFT)]
        if action == "split":
            try:
                val, test = float(form.get("val") or 0.1), float(form.get("test") or 0)
            except ValueError:
                raise InvalidRequest("the split fractions are numbers such as 0.1",
                                     param="val") from None
            summary = split_file(tmp_src, Path(tmp) / "out", val=val, test=test)
            return [_store(request, who, Path(p), f"{stem}.{name}.jsonl", DRAFT)
                    for name, p in summary.paths.items()]
    raise InvalidRequest(f"unknown dataset action {action!r}", param="action")


@router.post("/datasets/{file_id}/{action}", response_class=HTMLResponse)
async def dataset_action(file_id: str, action: str, request: Request) -> Any:
    form = await request.form()
    s, who = form_check(request, form)
    try:
        made = await run_in_threadpool(_act, request, who, file_id, action, form)
    except AfinarError as e:
        model = pick_model(request, who, str(form.get("model") or "") or None)
        try:
            ctx = await run_in_threadpool(report, request, who, file_id, model)
        except AfinarError as e2:
            return error_page(request, who, s, "Dataset", e2)
        return page(request, "dataset.html", who, s, models=chat_models(request, who),
                    status_code=e.http_status, action_error=e.message, action=action, **ctx)
    if action == "train":
        return RedirectResponse(f"/fine-tune?training_file={made[0]['id']}", status_code=303)
    return RedirectResponse(f"/datasets/{made[0]['id']}", status_code=303)
