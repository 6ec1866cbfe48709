"""The audit log: who (key id, key name, project) did what (``POST /v1/files``), to which
object, when, and the HTTP status it got. The server records every write (POST and DELETE on
every endpoint, refused ones included) and every read by an admin or owner key; ``afinar audit``
reads it."""

from __future__ import annotations

import time

from sqlalchemy import select

from afinar.settings import Settings, get_settings
from afinar.store.db import get_database
from afinar.store.tables import AuditEntry

MAX_ACTION = 300


class AuditLog:
    def __init__(self, settings: Settings | None = None):
        self.db = get_database((settings or get_settings()).db_url)

    def record(self, *, key_id: str | None, key_name: str, project_id: str, action: str,
               object_id: str | None, status: int) -> None:
        with self.db.session() as s:
            s.add(AuditEntry(created_at=time.time(), key_id=key_id, key_name=key_name[:128],
                             project_id=project_id, action=action[:MAX_ACTION],
                             object_id=object_id[:300] if object_id else None,
                             status=int(status)))

    def entries(self, limit: int = 50, key: str | None = None,
                project: str | None = None) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first; ``key``: a key id or name."""
        q = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(max(1, limit))
        if key:
            q = q.where((AuditEntry.key_id == key) | (AuditEntry.key_name == key))
        if project:
            q = q.where(AuditEntry.project_id == project)
        with self.db.session() as s:
            return list(s.scalars(q))
