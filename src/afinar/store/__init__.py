"""Persistent state under ``AFINAR_HOME``: the SQL database (SQLAlchemy, SQLite by default) and a
content-addressed blob store. Everything above this layer reads and writes through here."""

from afinar.store.atomic import atomic_dir, atomic_write_bytes, atomic_write_text
from afinar.store.blobs import Blob, BlobStore
from afinar.store.db import Database, get_database

__all__ = [
    "Blob",
    "BlobStore",
    "Database",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "get_database",
]
