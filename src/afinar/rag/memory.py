"""Memories (passive RAG): short facts about one user, searchable only for that user, and
deletable for real.

Each user's memories live in their own knowledge base (``_memory.<user>``), so isolation holds by
construction; forgetting deletes the memory's record, its chunks and their vectors in one
transaction, and the indexes derived from them are rebuilt before the next search.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from afinar.errors import InvalidRequest, NotFound
from afinar.ids import new_id
from afinar.rag.kb import KnowledgeBases
from afinar.settings import Settings

_USER = re.compile(r"^[A-Za-z0-9_.@\-]{1,100}$")


@dataclass
class Memory:
    id: str
    text: str
    created_at: int
    score: float | None = None


class Memories:
    def __init__(self, user: str, settings: Settings | None = None):
        if not _USER.match(user):
            raise InvalidRequest(f"invalid user id {user!r}", param="user")
        self.user = user
        self.kbs = KnowledgeBases(settings)
        import hashlib

        self.name = "_memory." + hashlib.sha256(user.encode()).hexdigest()[:20]

    def _kb(self, create: bool) -> str | None:
        try:
            return self.kbs.get(self.name).id
        except NotFound:
            if not create:
                return None
            return self.kbs.create(self.name, internal=True).id

    def add(self, text: str) -> Memory:
        kb = self._kb(create=True)
        mid = new_id("mem_", 16)
        self.kbs.add_text(kb, mid, text.strip(), attributes={"user": self.user})
        return Memory(mid, text.strip(), int(time.time()))

    def list(self) -> list[Memory]:
        kb = self._kb(create=False)
        if kb is None:
            return []
        from sqlalchemy import select

        from afinar.store.tables import KbChunk

        docs = self.kbs.documents(kb)
        parts: dict[str, list[str]] = {d.id: [] for d in docs}
        with self.kbs.db.session() as s:
            for doc_id, text in s.execute(select(KbChunk.doc_id, KbChunk.text).where(
                    KbChunk.kb_id == kb).order_by(KbChunk.doc_id, KbChunk.idx)):
                parts.setdefault(doc_id, []).append(text)
        out = [Memory(d.source, "\n".join(parts[d.id]), d.created_at) for d in docs]
        return sorted(out, key=lambda m: (m.created_at, m.id))

    def search(self, query: str, k: int = 5, threshold: float = 0.3) -> list[Memory]:
        kb = self._kb(create=False)
        if kb is None:
            return []
        hits = self.kbs.search(kb, query, groups=None, k=k, score_threshold=threshold)
        return [Memory(h.source, h.text, 0, h.score) for h in hits]

    def forget(self, memory_id: str | None = None, everything: bool = False) -> int:
        kb = self._kb(create=False)
        if kb is None:
            return 0
        if everything:
            n = len(self.kbs.documents(kb))
            self.kbs.delete(kb)
            return n
        if memory_id is None:
            raise InvalidRequest("name a memory id or pass everything=True", param="id")
        if not self.kbs.remove(kb, memory_id):
            raise NotFound(f"no memory {memory_id!r} for {self.user}", param="id")
        return 1
