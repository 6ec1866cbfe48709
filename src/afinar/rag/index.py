"""Search indexes of a knowledge base: BM25 (bm25s) and dense vectors, over the same chunks.

The database is the source of truth: chunk text and vectors are written there, one document per
transaction. The indexes here are derived from those rows and stamped with the knowledge base's
``version``; a stale or damaged copy is rebuilt, never trusted. They live in memory and on disk
under ``AFINAR_HOME/kb/<id>/index/`` (written atomically) so a new process loads them quickly.

Access control and filters are applied as a mask over chunks *before* ranking, in both indexes:
a chunk the caller may not read never takes a top-k slot, so results are never drained and its
score never leaks.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from afinar.store.atomic import atomic_dir
from afinar.store.tables import KbChunk, KbDocument

STOPWORDS = "en"
INDEX_FORMAT = 2  # 2: BM25 over ``lexical_text`` (title root out, section title twice)
ANN_THRESHOLD = 20_000  # chunks; below it exact search (one BLAS product) is fast and exact
ANN_MIN_ALLOWED = 0.05  # below this share of readable chunks, exact search over them is cheaper


def build_ann(vectors: np.ndarray):
    """An HNSW graph (hnswlib) over unit vectors, inner-product space."""
    import hnswlib

    ann = hnswlib.Index(space="ip", dim=vectors.shape[1])
    ann.init_index(max_elements=len(vectors), ef_construction=200, M=32, random_seed=0)
    ann.add_items(vectors, np.arange(len(vectors)))
    return ann


def lexical_text(text: str, heading_path: list[str] | None) -> str:
    """What BM25 indexes for a chunk: its text with two changes to the heading path line.

    - The path's root, the document title (chunking puts it first), is left out when the path
      has more: it is the same in every chunk of the document, so a question that shares words
      with the title ("What is Debian GNU/Linux?" in "The Debian GNU/Linux FAQ") matched every
      chunk equally and BM25 ranked by the remaining words ("what"). The dense index still
      embeds the full line.
    - The chunk's own section title is counted twice (BM25F's title-field weighting, weight 2):
      BM25's length normalisation otherwise lets a short neighbour that repeats the question's
      words in passing outrank the long section whose title is the question.
    Measured on the Debian FAQ (txt, pdf, html): "What is Debian GNU/Linux?" ranks section 1.2
    first lexically in all three formats (``tests/integration/test_faq_retrieval.py``); before, 1.3 or the
    table of contents did."""
    if not heading_path:
        return text
    first, sep, body = text.partition("\n")
    if len(heading_path) >= 2 and first.startswith(heading_path[0]):
        first = " > ".join(heading_path[1:])
    return f"{first}{sep}{body}\n{heading_path[-1]}"


def _tokenize(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords=STOPWORDS, show_progress=False)


@dataclass
class DocMeta:
    id: str
    source: str
    groups: frozenset[str]
    attributes: dict


class KbIndex:
    def __init__(self, version: int, rowids: np.ndarray, doc_of: np.ndarray, docs: list[DocMeta],
                 vectors: np.ndarray, bm25, ann=None, ann_threshold: int = ANN_THRESHOLD):
        self.version, self.rowids, self.doc_of = version, rowids, doc_of
        self.docs, self.vectors, self.bm25 = docs, vectors, bm25
        self.ann_threshold = ann_threshold
        self.ann = ann if ann is not None or len(vectors) < ann_threshold else build_ann(vectors)

    @property
    def size(self) -> int:
        return len(self.rowids)

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, session, kb_id: str, version: int, searchable: bool = True) -> KbIndex:
        """From the database rows. ``searchable=False`` skips the BM25 and HNSW structures (what
        ``kb check`` compares needs only the chunk ids and vectors)."""
        import bm25s

        docs = [DocMeta(d.id, d.source, frozenset(d.groups or []), dict(d.attributes or {}))
                for d in session.scalars(select(KbDocument).where(
                    KbDocument.kb_id == kb_id, KbDocument.status == "ready").order_by(
                    KbDocument.id))]
        pos = {d.id: i for i, d in enumerate(docs)}
        rows = session.execute(select(KbChunk.rowid, KbChunk.doc_id, KbChunk.text, KbChunk.vector,
                                      KbChunk.heading_path)
                               .where(KbChunk.kb_id == kb_id).order_by(KbChunk.rowid)).all()
        rows = [r for r in rows if r.doc_id in pos]
        rowids = np.array([r.rowid for r in rows], dtype=np.int64)
        doc_of = np.array([pos[r.doc_id] for r in rows], dtype=np.int32)
        dim = len(rows[0].vector) // 4 if rows else 0
        vectors = (np.frombuffer(b"".join(r.vector for r in rows), dtype=np.float32)
                   .reshape(len(rows), dim) if rows else np.zeros((0, 0), np.float32))
        bm25 = bm25s.BM25()
        if rows and searchable:
            bm25.index(_tokenize([lexical_text(r.text, r.heading_path) for r in rows]),
                       show_progress=False)
        return cls(version, rowids, doc_of, docs, vectors, bm25,
                   ann_threshold=ANN_THRESHOLD if searchable else len(rows) + 1)

    def save(self, folder: Path) -> None:
        with atomic_dir(folder) as tmp:
            np.save(tmp / "vectors.npy", self.vectors)
            np.save(tmp / "rowids.npy", self.rowids)
            np.save(tmp / "doc_of.npy", self.doc_of)
            if self.size:
                self.bm25.save(str(tmp / "bm25"))
            if self.ann is not None:
                self.ann.save_index(str(tmp / "hnsw.bin"))
            (tmp / "meta.json").write_text(json.dumps({
                "version": self.version, "format": INDEX_FORMAT, "size": self.size, "docs": [d.id for d in self.docs],
                "fingerprint": self.fingerprint()}))

    @classmethod
    def load(cls, folder: Path, session, kb_id: str) -> KbIndex | None:
        import bm25s

        try:
            meta = json.loads((folder / "meta.json").read_text())
            vectors = np.load(folder / "vectors.npy")
            rowids = np.load(folder / "rowids.npy")
            doc_of = np.load(folder / "doc_of.npy")
            bm25 = bm25s.BM25.load(str(folder / "bm25")) if meta["size"] else bm25s.BM25()
        except (OSError, ValueError, KeyError):
            return None
        if meta.get("format") != INDEX_FORMAT:
            return None  # built by an older version (other lexical text): rebuilt
        by_id = {d.id: d for d in session.scalars(select(KbDocument).where(
            KbDocument.kb_id == kb_id))}
        if any(i not in by_id for i in meta["docs"]):
            return None
        docs = [DocMeta(i, by_id[i].source, frozenset(by_id[i].groups or []),
                        dict(by_id[i].attributes or {})) for i in meta["docs"]]
        ann = None
        if (folder / "hnsw.bin").is_file():
            import hnswlib

            ann = hnswlib.Index(space="ip", dim=vectors.shape[1])
            ann.load_index(str(folder / "hnsw.bin"), max_elements=len(vectors))
        idx = cls(meta["version"], rowids, doc_of, docs, vectors, bm25, ann)
        return idx if idx.fingerprint() == meta["fingerprint"] else None

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.rowids.tobytes())
        h.update(self.vectors.tobytes())
        return h.hexdigest()

    # -- searching ----------------------------------------------------------------------------
    def mask(self, groups: frozenset[str] | None, filters: dict | None) -> np.ndarray:
        """Chunks the caller may see: ACL (``groups`` None means unrestricted) and filters."""
        from afinar.rag.filters import matches

        ok_doc = np.array([(groups is None or not d.groups or bool(d.groups & groups))
                           and matches(filters, d.attributes) for d in self.docs], dtype=bool)
        return ok_doc[self.doc_of] if self.size else np.zeros(0, dtype=bool)

    def dense(self, qvec: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.size or not allowed.any():
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        n_allowed = int(allowed.sum())
        if self.ann is not None and n_allowed >= ANN_MIN_ALLOWED * self.size:
            return self._ann(qvec, allowed, min(k, n_allowed), n_allowed == self.size)
        scores = self.vectors @ qvec.astype(np.float32)
        scores[~allowed] = -np.inf
        return _top(scores, min(k, int(allowed.sum())))

    def _ann(self, qvec: np.ndarray, allowed: np.ndarray, k: int, everything: bool):
        """HNSW search; the ACL/filter mask is applied inside the graph walk (hnswlib's filter),
        so unreadable chunks never take a result slot."""
        self.ann.set_ef(max(200, 10 * k))
        flt = None if everything else (lambda label: bool(allowed[label]))
        labels, dist = self.ann.knn_query(qvec.astype(np.float32)[None, :], k=k, filter=flt)
        order = labels[0].astype(np.int64)
        return order, (1.0 - dist[0]).astype(np.float32)  # ip distance = 1 - inner product

    def lexical(self, query: str, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.size or not allowed.any():
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        import bm25s

        words = bm25s.tokenize([query], stopwords=STOPWORDS, return_ids=False,
                               show_progress=False)[0]
        if not words:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = self.bm25.get_scores(words).astype(np.float32)
        scores[~allowed] = -np.inf
        scores[scores <= 0] = -np.inf  # no query term: not a lexical match
        n = int(np.isfinite(scores).sum())
        return _top(scores, min(k, n))


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    part = np.argpartition(-scores, k - 1)[:k]
    order = part[np.argsort(-scores[part], kind="stable")]
    return order, scores[order]


class IndexCache:
    """Per-process cache of loaded indexes, keyed by knowledge base and version."""

    def __init__(self) -> None:
        self._items: dict[str, KbIndex] = {}
        self._lock = threading.Lock()

    def get(self, session, kb_id: str, version: int, folder: Path) -> KbIndex:
        with self._lock:
            idx = self._items.get(kb_id)
            if idx is not None and idx.version == version:
                return idx
            idx = KbIndex.load(folder, session, kb_id)
            if idx is None or idx.version != version:
                idx = KbIndex.build(session, kb_id, version)
                idx.save(folder)
            self._items[kb_id] = idx
            return idx

    def drop(self, kb_id: str) -> None:
        with self._lock:
            self._items.pop(kb_id, None)


CACHE = IndexCache()
