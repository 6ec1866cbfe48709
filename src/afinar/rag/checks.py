"""Consistency of a knowledge base: do its records, the vector index and the lexical index
agree? ``check`` says where they drift apart; ``repair`` drops what cannot be trusted (orphan
chunks, half-written documents, to be re-ingested) and rebuilds the indexes from the records.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select

from afinar.rag.index import CACHE, KbIndex
from afinar.rag.records import KbRecords
from afinar.store.tables import KbChunk, KbDocument


class KbChecks(KbRecords):
    def check(self, kb: str, repair: bool = False) -> dict[str, Any]:
        """Do records, the vector index and the lexical index agree? ``repair`` fixes drift."""
        rec = self.get(kb)
        folder = self._dir(rec.id) / "index"
        problems: list[str] = []
        with self.db.session() as s:
            docs = {d.id: d for d in s.scalars(select(KbDocument).where(
                KbDocument.kb_id == rec.id))}
            counts = dict(s.execute(select(KbChunk.doc_id, func.count()).where(
                KbChunk.kb_id == rec.id).group_by(KbChunk.doc_id)).all())
            orphans = [d for d in counts if d not in docs]
            if orphans:
                problems.append(f"{sum(counts[d] for d in orphans)} chunks of "
                                f"{len(orphans)} unknown documents")
            for d in docs.values():
                if counts.get(d.id, 0) != d.n_chunks or d.status != "ready":
                    problems.append(f"{d.source}: record says {d.n_chunks} chunks "
                                    f"({d.status}), {counts.get(d.id, 0)} stored")
            truth = KbIndex.build(s, rec.id, rec.version, searchable=False)
            disk = KbIndex.load(folder, s, rec.id)
        if disk is None and folder.exists():
            problems.append("the index files are damaged")
        elif disk is None:
            problems.append("the index files are missing")
        else:
            if disk.version != rec.version:
                problems.append(f"the index is at version {disk.version}, records at "
                                f"{rec.version}")
            if disk.fingerprint() != truth.fingerprint():
                problems.append("the vector index differs from the records")
            n_lex = int(getattr(disk.bm25, "scores", {}).get("num_docs", disk.size)
                        if disk.size else 0)
            if n_lex != truth.size:
                problems.append(f"the lexical index has {n_lex} chunks, records {truth.size}")
        if repair and problems:
            with self.db.session() as s:
                if orphans:
                    s.execute(delete(KbChunk).where(KbChunk.doc_id.in_(orphans)))
                for d in s.scalars(select(KbDocument).where(KbDocument.kb_id == rec.id)):
                    n = counts.get(d.id, 0)
                    if d.status != "ready" or n != d.n_chunks:
                        s.execute(delete(KbChunk).where(KbChunk.doc_id == d.id))
                        s.delete(d)  # re-ingest it with kb add / kb sync
                self._bump(s, rec.id)
            CACHE.drop(rec.id)
            self.index(kb)
        return {"ok": not problems, "problems": problems, "repaired": bool(repair and problems),
                "documents": len(docs), "chunks": truth.size, "version": rec.version}
