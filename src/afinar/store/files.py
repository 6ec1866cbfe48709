"""Files (the OpenAI Files API's service): bytes in the blob store, a record in the database."""

from __future__ import annotations

import time
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select

from afinar.errors import InvalidRequest, NotFound
from afinar.ids import new_id
from afinar.settings import Settings, get_settings
from afinar.store.blobs import BlobStore
from afinar.store.db import get_database
from afinar.store.tables import FileRecord

PURPOSES = ("fine-tune", "fine-tune-results", "assistants", "batch", "user_data", "evals",
            "vision")
MAX_BYTES = 512 << 20  # OpenAI's per-file limit


def _safe_name(name: str) -> str:
    # The client's filename is only ever shown, never used as a path.
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip() or "file"
    return "".join(c for c in base if c.isprintable())[:255]


class Files:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.db = get_database(self.settings.db_url)
        self.blobs = BlobStore(self.settings.blobs_dir)

    def create(self, stream: BinaryIO, filename: str, purpose: str,
               max_bytes: int = MAX_BYTES, owner_key_id: str | None = None,
               owner_groups: list[str] | None = None, project_id: str = "default"
               ) -> FileRecord:
        """Store a file; ``owner_key_id``/``owner_groups``/``project_id``: the API key that
        uploads it (who may read it: ``afinar.store.access``)."""
        if purpose not in PURPOSES:
            raise InvalidRequest(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
        blob = self.blobs.put_stream(stream, max_bytes=max_bytes)
        rec = FileRecord(id=new_id("file-"), purpose=purpose, filename=_safe_name(filename),
                         bytes=blob.size, sha256=blob.digest, status="processed",
                         created_at=int(time.time()), info={}, owner_key_id=owner_key_id,
                         owner_groups=list(owner_groups or []) if owner_key_id else None,
                         project_id=project_id)
        with self.db.session() as s:
            s.add(rec)
        return rec

    def create_from_path(self, path: str | Path, purpose: str) -> FileRecord:
        p = Path(path)
        if not p.is_file():
            raise InvalidRequest(f"{p}: no such file", param="file")
        with open(p, "rb") as f:
            return self.create(f, p.name, purpose)

    def get(self, file_id: str) -> FileRecord:
        with self.db.session() as s:
            rec = s.get(FileRecord, file_id)
        if rec is None:
            raise NotFound(f"no file {file_id!r}", param="file_id")
        return rec

    def path(self, file_id: str) -> Path:
        return self.blobs.get(self.get(file_id).sha256).path

    def list(self, purpose: str | None = None) -> list[FileRecord]:
        q = select(FileRecord).order_by(FileRecord.created_at.desc(), FileRecord.id)
        if purpose:
            q = q.where(FileRecord.purpose == purpose)
        with self.db.session() as s:
            return list(s.scalars(q))

    def delete(self, file_id: str) -> None:
        with self.db.session() as s:
            rec = s.get(FileRecord, file_id)
            if rec is None:
                raise NotFound(f"no file {file_id!r}", param="file_id")
            s.delete(rec)
            shared = s.scalar(select(FileRecord.id).where(FileRecord.sha256 == rec.sha256,
                                                          FileRecord.id != file_id).limit(1))
        if shared is None:
            self.blobs.delete(rec.sha256)
