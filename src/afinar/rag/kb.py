"""Knowledge bases: ingest documents (load, chunk, embed), keep them in sync with their sources,
search them (lexical, dense, hybrid) with access control and filters, and check their indexes.

``KnowledgeBases`` is the one object callers use; each part lives in its own module:

- ``rag.records``: the records and their lifecycle (create, list, settings, delete, version);
- ``rag.ingest``: add files and texts, sync a folder, remove documents (one transaction each);
- ``rag.search``: the mask, a retriever (``rag.retrievers``), fusion (``rag.fusion``), rerank;
- ``rag.checks``: do records and indexes agree (``check``, ``repair``).

Choosing a base's fusion on labelled queries is an evaluation: ``afinar.evals.fusion_tuning``.
"""

from __future__ import annotations

from afinar.rag.checks import KbChecks
from afinar.rag.ingest import KbIngestion
from afinar.rag.search import KbSearch

__all__ = ["KnowledgeBases"]


class KnowledgeBases(KbIngestion, KbSearch, KbChecks):
    """Records, ingestion, search and checks of the knowledge bases in ``settings.db_url``."""
