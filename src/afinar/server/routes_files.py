"""``/v1/files``: OpenAI's Files API over ``afinar.store.files.Files``.

Uploads are streamed into the blob store under a size limit (``app.state.max_upload_bytes``,
512 MB by default); the client's filename is only ever shown. A ``fine-tune`` upload is checked
by the dataset validator (structure only, no tokenizer) and refused whole when it has errors.

Access (``afinar.store.access``): a file belongs to the uploading key's project and is recorded
with that key and its groups. Its readers (list, retrieve, content, use in jobs and vector
stores) are the same as its documents' in every vector store: the uploader, the groups it is
restricted to (by default the uploader's groups at upload time) and the project's admins. To
anyone else it does not exist (404, as an unknown id). Only the uploader or an admin deletes it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from afinar.errors import InvalidRequest
from afinar.server.common import Auth, Caller, page, readable_file
from afinar.store.files import MAX_BYTES, Files
from afinar.store.tables import FileRecord

router = APIRouter(dependencies=[Auth])
MAX_ERRORS_SHOWN = 5


def file_object(rec: FileRecord, details: str | None = None) -> dict[str, Any]:
    return {"id": rec.id, "object": "file", "bytes": rec.bytes, "created_at": rec.created_at,
            "filename": rec.filename, "purpose": rec.purpose, "status": rec.status or "processed",
            "expires_at": None, "status_details": details}


def _files(request: Request) -> Files:
    return Files(request.app.state.settings)


def _check_fine_tune(files: Files, rec: FileRecord) -> str | None:
    """Validate a fine-tune upload's structure; on errors delete it and raise ``invalid_file``.
    Warnings (duplicates, a missing system prompt, ...) do not block: they come back in the
    upload's ``status_details`` (OpenAI's field for validation details), one line per code."""
    from afinar.data.validate import validate_file

    report = validate_file(files.path(rec.id))
    if report.ok:
        lines = report.warning_lines()
        return ("warnings: " + "; ".join(lines)) if lines else None
    files.delete(rec.id)
    shown = "; ".join(str(e) for e in report.errors[:MAX_ERRORS_SHOWN])
    more = report.n_errors - min(len(report.errors), MAX_ERRORS_SHOWN)
    raise InvalidRequest(
        f"{rec.filename} is not a valid fine-tuning file ({report.n_errors} errors): {shown}"
        + (f"; and {more} more" if more > 0 else "")
        + ". Run `afinar data validate FILE` for the full report.",
        code="invalid_file", param="file")


def _create(files: Files, upload: UploadFile, purpose: str, max_bytes: int,
            who: Caller) -> tuple[FileRecord, str | None]:
    rec = files.create(upload.file, upload.filename or "file", purpose, max_bytes,
                       owner_key_id=who.key_id, owner_groups=sorted(who.groups),
                       project_id=who.project)
    details = _check_fine_tune(files, rec) if purpose == "fine-tune" else None
    return rec, details


@router.post("/files")
async def create_file(request: Request, file: UploadFile = File(...),
                      purpose: str = Form(...), who: Caller = Auth) -> dict[str, Any]:
    max_bytes = int(getattr(request.app.state, "max_upload_bytes", None) or MAX_BYTES)
    try:
        rec, details = await run_in_threadpool(_create, _files(request), file, purpose,
                                               max_bytes, who)
    finally:
        await file.close()
    return file_object(rec, details)


@router.get("/files")
async def list_files(request: Request, purpose: str | None = None, after: str | None = None,
                     limit: int = Query(10000, ge=1, le=10000),
                     order: str = Query("desc", pattern="^(asc|desc)$"),
                     who: Caller = Auth) -> dict[str, Any]:
    recs = [r for r in await run_in_threadpool(_files(request).list, purpose)
            if who.may_read_file(r)]
    items = [file_object(r) for r in (recs if order == "desc" else reversed(recs))]
    return page(items, after, limit, max_limit=10000)


@router.get("/files/{file_id}")
async def retrieve_file(file_id: str, request: Request, who: Caller = Auth) -> dict[str, Any]:
    return file_object(await run_in_threadpool(readable_file, who, _files(request), file_id))


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, request: Request, who: Caller = Auth) -> dict[str, Any]:
    files = _files(request)
    rec = await run_in_threadpool(readable_file, who, files, file_id)
    who.require_owner(rec.owner_key_id, f"delete file {file_id}")
    await run_in_threadpool(_delete, request, files, file_id)
    return {"id": file_id, "object": "file", "deleted": True}


def _delete(request: Request, files: Files, file_id: str) -> None:
    """As OpenAI: the file goes, and from every vector store with it; no copy of its content
    stays on disk (``afinar.server.vector_store_recovery.forget_file``)."""
    from afinar.rag.kb import KnowledgeBases
    from afinar.server.vector_store_recovery import forget_file, scrub_database

    kbs = KnowledgeBases(request.app.state.settings)
    forget_file(kbs, files, file_id)
    files.delete(file_id)
    scrub_database(kbs)


@router.get("/files/{file_id}/content")
async def file_content(file_id: str, request: Request, who: Caller = Auth) -> FileResponse:
    files = _files(request)
    rec = await run_in_threadpool(readable_file, who, files, file_id)
    path = await run_in_threadpool(files.path, file_id)
    return FileResponse(path, media_type="application/octet-stream", filename=rec.filename)
