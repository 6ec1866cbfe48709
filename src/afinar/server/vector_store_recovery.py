"""Vector stores that survive a crash, and files whose deletion leaves no copy behind.

Ingestion through the API is made crash-consistent in three ways:

- *Bookkeeping first.* Before a file is ingested, its entry in ``KbRecord.info["files"]``
  (filename, created time, readers) is written as ``in_progress`` with the process that works on
  it (``owner``); documents are committed one transaction each (``KnowledgeBases._commit``); the
  entry is completed (or ``failed``) at the end. A process killed in between leaves an
  ``in_progress`` entry whose owner is dead: ``recover`` (run when the server starts) completes
  it where the document is in the store and marks it ``failed`` (``server_error``: add the file
  again) where it is not. A document made from a file with no entry at all (a crash of an older
  version) gets its entry back from the file's record.
- *A store is complete or gone.* A store created by ``POST /v1/vector_stores`` carries
  ``info["creating"]`` (its owner) until its ``file_ids`` are ingested: it shows
  ``status: "in_progress"`` meanwhile, and ``recover`` deletes one whose owner died (the client
  never received its id).
- *No staging left behind.* Blobs have no extension, so ingestion links each one under a name
  with its suffix in a staging folder ``AFINAR_HOME/vs-ingest-<pid>-*``, removed when the
  ingestion ends; ``recover`` removes those of dead processes (a hard link would otherwise keep
  a deleted file's content on disk), and their partial uploads (``blobs/tmp/<pid>-*.part``).

Deleting a file (``forget_file``, used by ``DELETE /v1/files/{id}``) follows OpenAI: "Delete a
file and remove it from all vector stores". Its documents and chunks go from every store, each
store's index is rebuilt at once (the lexical index holds the chunks' words), staging links to
its blob are unlinked, and SQLite overwrites the freed pages (``secure_delete``) and truncates its
write-ahead log, so no copy of its content stays under ``AFINAR_HOME``. (Removing a file from one
store only, ``DELETE /v1/vector_stores/{id}/files/{file_id}``, keeps the file, as OpenAI does.)
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, text

from afinar.processes import pid_alive
from afinar.rag.index import CACHE
from afinar.rag.kb import KnowledgeBases
from afinar.store.files import Files
from afinar.store.tables import FileRecord, KbChunk, KbDocument, KbRecord

STAGING = "vs-ingest-"
_STAGING_NAME = re.compile(rf"^{STAGING}(\d+)-")
_TOKEN = secrets.token_hex(6)  # this process, even where a dead one had the same pid
_ACTIVE: set[str] = set()  # staging folders this process is using now
_LOCK = threading.Lock()
INTERRUPTED = {"code": "server_error",
               "message": "ingestion was interrupted (the server stopped); add the file again"}


def owner() -> dict[str, Any]:
    """Who works on an entry or a store being created: this process."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": _TOKEN}


def alive(who: dict | None) -> bool:
    """Is the process that recorded ``who`` still running? (One on another host is taken as
    alive: it is not ours to judge.)"""
    if not who:
        return False
    if who.get("host") != socket.gethostname():
        return True
    pid = int(who.get("pid") or 0)
    if pid == os.getpid():
        return who.get("token") == _TOKEN
    return pid_alive(pid)


@contextlib.contextmanager
def staging(home: Path) -> Iterator[Path]:
    """A staging folder for one ingestion, gone when it ends (``recover`` removes one left by a
    killed process)."""
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home, prefix=f"{STAGING}{os.getpid()}-") as tmp:
        with _LOCK:
            _ACTIVE.add(tmp)
        try:
            yield Path(tmp)
        finally:
            with _LOCK:
                _ACTIVE.discard(tmp)


def _stale_staging(home: Path) -> list[Path]:
    out = []
    for p in home.glob(f"{STAGING}*"):
        m = _STAGING_NAME.match(p.name)
        if not m or not p.is_dir():
            continue
        pid = int(m.group(1))
        with _LOCK:
            mine = str(p) in _ACTIVE
        if pid == os.getpid() and not mine or pid != os.getpid() and not alive(
                {"host": socket.gethostname(), "pid": pid}):
            out.append(p)
    return out


def settle_entries(kbs: KnowledgeBases, kb_id: str, mine: set[str] | None = None) -> list[str]:
    """``in_progress`` file entries of a store whose owner died (or, with ``mine``, those of
    these file ids): completed where the document is in the store, else ``failed``.
    Also an entry for every document made from a stored file that has none. The file ids
    settled."""
    with kbs.db.session() as s:
        docs = {d.source: d for d in s.scalars(select(KbDocument).where(
            KbDocument.kb_id == kb_id))}
        names = dict(s.execute(select(FileRecord.id, FileRecord.filename).where(
            FileRecord.id.in_([src for src in docs if src.startswith("file-")]))).all())
    settled: list[str] = []

    def change(info: dict) -> None:
        known = info.setdefault("files", {})
        for fid, entry in known.items():
            if entry.get("status") != "in_progress" or (
                    fid not in mine if mine is not None else alive(entry.get("owner"))):
                continue
            entry.pop("owner", None)
            doc = docs.get(fid)
            if doc is not None and doc.status == "ready":
                entry.pop("status")
            else:
                entry.update(status="failed", last_error=dict(INTERRUPTED))
            settled.append(fid)
        for fid, name in names.items():
            if fid not in known:
                doc = docs[fid]
                known[fid] = {"filename": name, "created_at": doc.created_at,
                              "groups": doc.groups}
                settled.append(fid)

    kbs.update_info(kb_id, change)
    return settled


def recover(kbs: KnowledgeBases) -> dict[str, list[str]]:
    """Run when the server starts: remove stores whose creating request died, settle the file
    entries of interrupted ingestions, remove dead processes' staging folders and partial
    uploads. What was done."""
    done: dict[str, list[str]] = {"stores_removed": [], "files_settled": [], "staging": []}
    for rec in kbs.list(internal=True):
        creating = (rec.info or {}).get("creating")
        if creating is not None and not alive(creating):
            kbs.delete(rec.id)
            done["stores_removed"].append(rec.id)
        elif not rec.name.startswith("_"):  # internal bases (memories) hold no files
            done["files_settled"] += [f"{rec.id}/{f}" for f in settle_entries(kbs, rec.id)]
    for p in _stale_staging(kbs.settings.home):
        shutil.rmtree(p, ignore_errors=True)
        done["staging"].append(p.name)
    here = socket.gethostname()
    for pid, p in Files(kbs.settings).blobs.partial():  # uploads cut short
        if pid != os.getpid() and not alive({"host": here, "pid": pid}):
            p.unlink(missing_ok=True)
            done["staging"].append(p.name)
    return done


def forget_file(kbs: KnowledgeBases, files: Files, file_id: str) -> list[str]:
    """Remove a stored file from every vector store (documents, chunks, bookkeeping, indexes)
    and unlink staging links to its blob; the caller then deletes the file itself
    (``Files.delete``). The stores it was removed from."""
    rec = files.get(file_id)
    with kbs.db.session() as s:
        kb_ids = sorted(set(s.scalars(select(KbDocument.kb_id).where(
            KbDocument.source == file_id))))
        kb_ids += [r.id for r in s.scalars(select(KbRecord))
                   if file_id in (r.info or {}).get("files", {}) and r.id not in kb_ids]
        doc_ids = list(s.scalars(select(KbDocument.id).where(KbDocument.source == file_id)))
        if doc_ids:
            s.execute(delete(KbChunk).where(KbChunk.doc_id.in_(doc_ids)))
            s.execute(delete(KbDocument).where(KbDocument.id.in_(doc_ids)))
            for kb_id in kb_ids:
                kbs._bump(s, kb_id)
    for kb_id in kb_ids:
        kbs.update_info(kb_id, lambda info: info.get("files", {}).pop(file_id, None))
        CACHE.drop(kb_id)
        kbs.index(kb_id)  # rewritten now: the old lexical index holds the file's words
    _unlink_staged(kbs.settings.home, files.blobs.path(rec.sha256))
    return kb_ids


def _unlink_staged(home: Path, blob: Path) -> None:
    try:
        ino = blob.stat()
    except OSError:
        return
    for p in home.glob(f"{STAGING}*/*"):
        with contextlib.suppress(OSError):
            st = p.stat()
            if (st.st_ino, st.st_dev) == (ino.st_ino, ino.st_dev):
                p.unlink()


def scrub_database(kbs: KnowledgeBases) -> None:
    """Make SQLite drop what deleted rows left: freed pages are zeroed (``secure_delete``, set
    on every connection by ``afinar.store.db``) and the write-ahead log, which still holds the
    old pages, is checkpointed and truncated."""
    if not kbs.settings.db_url.startswith("sqlite"):
        return
    with kbs.db.session() as s:
        s.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
