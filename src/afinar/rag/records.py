"""Knowledge base records and their lifecycle: create, get, list, change settings, delete, and
the version every change bumps (the search indexes are derived from the rows at a version).

``KbRecords`` is the base the other parts of a knowledge base build on (``ingest``, ``search``,
``checks``; ``kb.KnowledgeBases`` puts them together): it holds the settings and the database,
finds a base by name or id, and knows where its derived files live.
"""

from __future__ import annotations

import copy
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from afinar.errors import Conflict, InvalidRequest, NotFound
from afinar.ids import new_id
from afinar.rag.chunking import ChunkingStrategy
from afinar.rag.embeddings import get_embedder
from afinar.rag.index import CACHE, KbIndex
from afinar.settings import Settings, get_settings
from afinar.store.db import get_database
from afinar.store.tables import KbChunk, KbDocument, KbRecord

_INFO_LOCK = threading.Lock()  # info is read-modify-written; SQLite serialises processes
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class KbRecords:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.db = get_database(self.settings.db_url)

    def create(self, name: str | None, embedding_model: str | None = None,
               chunking: dict | None = None, internal: bool = False,
               info: dict[str, Any] | None = None, owner: dict[str, Any] | None = None,
               embed_backend: str | None = None) -> KbRecord:
        """A new knowledge base; without a name its id is its name (the server's vector stores
        keep their display name in ``info``). ``owner``: its project and creator columns
        (``project_id``, ``owner_key_id``), written with the record. ``embed_backend``
        (default ``AFINAR_EMBED_BACKEND``) is kept in ``info``: its chunks and queries use it."""
        kb_id = new_id("vs_")
        name = name or kb_id
        if not _NAME.match(name.removeprefix("_") if internal else name):
            raise InvalidRequest(f"invalid knowledge base name {name!r}", param="name")
        strategy = ChunkingStrategy.parse(chunking)
        emb = get_embedder(embedding_model, self.settings, embed_backend)
        with self.db.session() as s:
            if s.scalar(select(KbRecord.id).where(KbRecord.name == name)):
                raise Conflict(f"a knowledge base named {name!r} exists", param="name")
            rec = KbRecord(id=kb_id, name=name, embedding_model=emb.model_id,
                           dimensions=emb.dimensions, chunking=strategy.model_dump(), version=0,
                           created_at=int(time.time()),
                           info={**(info or {}), "embed_backend": emb.backend},
                           **(owner or {}))
            s.add(rec)
        return rec

    def get(self, name_or_id: str) -> KbRecord:
        with self.db.session() as s:
            rec = s.get(KbRecord, name_or_id) or s.scalar(
                select(KbRecord).where(KbRecord.name == name_or_id))
        if rec is None:
            raise NotFound(f"no knowledge base {name_or_id!r}", param="vector_store_id")
        return rec

    def list(self, internal: bool = False) -> list[KbRecord]:
        with self.db.session() as s:
            recs = list(s.scalars(select(KbRecord).order_by(KbRecord.created_at)))
        return [r for r in recs if internal or not r.name.startswith("_")]

    def update_info(self, kb: str, change: Callable[[dict], None]) -> dict[str, Any]:
        """Change the base's ``info`` (settings and bookkeeping) in one transaction."""
        rec = self.get(kb)
        with _INFO_LOCK, self.db.session() as s:
            r = s.get(KbRecord, rec.id)
            info = copy.deepcopy(r.info or {})
            change(info)
            r.info = info
        return info

    def set_attributes(self, kb: str, source: str, attributes: dict[str, Any],
                       groups: list[str] | None = None) -> None:
        """New attributes (and, when given, access groups) for one document (by source or id),
        without re-reading it."""
        rec = self.get(kb)
        with self.db.session() as s:
            doc = s.scalar(select(KbDocument).where(
                KbDocument.kb_id == rec.id,
                (KbDocument.source == source) | (KbDocument.id == source)))
            if doc is None:
                raise NotFound(f"no document {source!r} in {rec.name}", param="file_id")
            doc.attributes, doc.updated_at = dict(attributes), int(time.time())
            if groups is not None:
                doc.groups = sorted(set(groups))
            self._bump(s, rec.id)  # filters and the ACL mask read the index: rebuild it

    def documents(self, kb: str) -> list[KbDocument]:
        rec = self.get(kb)
        with self.db.session() as s:
            return list(s.scalars(select(KbDocument).where(KbDocument.kb_id == rec.id)
                                  .order_by(KbDocument.source)))

    def delete(self, kb: str) -> None:
        rec = self.get(kb)
        with self.db.session() as s:
            s.execute(delete(KbChunk).where(KbChunk.kb_id == rec.id))
            s.execute(delete(KbDocument).where(KbDocument.kb_id == rec.id))
            s.execute(delete(KbRecord).where(KbRecord.id == rec.id))
        CACHE.drop(rec.id)
        shutil.rmtree(self._dir(rec.id), ignore_errors=True)

    def index(self, kb: str) -> tuple[KbRecord, KbIndex]:
        """The base's search indexes at its current version (loaded, or rebuilt from the rows
        when missing or stale): search reads them, ingestion builds them, checks compare them."""
        rec = self.get(kb)
        with self.db.session() as s:
            return rec, CACHE.get(s, rec.id, rec.version, self._dir(rec.id) / "index")

    def _dir(self, kb_id: str) -> Path:
        return self.settings.home / "kb" / kb_id

    @staticmethod
    def _bump(s, kb_id: str) -> None:
        """A new version: the derived indexes of older versions are stale."""
        s.execute(update(KbRecord).where(KbRecord.id == kb_id).values(
            version=KbRecord.version + 1))
