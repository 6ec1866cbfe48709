"""API keys: random secrets shown once, stored as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from sqlalchemy import select, update

from afinar.errors import NotFound
from afinar.ids import new_id
from afinar.settings import Settings, get_settings
from afinar.store.db import get_database
from afinar.store.tables import ApiKey


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, settings: Settings | None = None):
        self.db = get_database((settings or get_settings()).db_url)

    def create(self, name: str) -> tuple[ApiKey, str]:
        """A new key; the secret is returned here and never again."""
        secret = "sk-afinar-" + secrets.token_urlsafe(32)
        rec = ApiKey(id=new_id("key_", 16), name=name, prefix=secret[:14], sha256=_hash(secret),
                     created_at=int(time.time()))
        with self.db.session() as s:
            s.add(rec)
        return rec, secret

    def list(self) -> list[ApiKey]:
        with self.db.session() as s:
            return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)))

    def any(self) -> bool:
        with self.db.session() as s:
            return s.scalar(select(ApiKey.id).limit(1)) is not None

    def revoke(self, key_id: str) -> None:
        with self.db.session() as s:
            rec = s.get(ApiKey, key_id)
            if rec is None:
                raise NotFound(f"no API key {key_id!r}")
            s.delete(rec)

    def verify(self, secret: str) -> ApiKey | None:
        digest = _hash(secret)
        with self.db.session() as s:
            rec = s.scalar(select(ApiKey).where(ApiKey.sha256 == digest))
            if rec is None or not hmac.compare_digest(rec.sha256, digest):
                return None
            s.execute(update(ApiKey).where(ApiKey.id == rec.id).values(
                last_used_at=int(time.time())))
            return rec
