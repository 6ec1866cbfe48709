"""The SQL database: one engine per URL, SQLite in WAL mode by default, versioned schema."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    select,
)
from sqlalchemy.orm import Session, sessionmaker

from afinar.errors import AfinarError
from afinar.store.migrations import MIGRATIONS, SCHEMA_VERSION

_version_md = MetaData()
schema_version = Table(
    "schema_version",
    _version_md,
    Column("version", Integer, primary_key=True),
    Column("description", String(256), nullable=False),
    Column("applied_at", BigInteger, nullable=False),
)


class SchemaTooNew(AfinarError):
    code = "schema_too_new"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA secure_delete=ON")  # deleted rows (a deleted file's chunks) zeroed
    cur.close()


class Database:
    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            from afinar.settings import PRIVATE_UMASK

            os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)  # its files: 0600 (settings.py)
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True,
                                                              mode=0o700)
        self.engine: Engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def version(self) -> int:
        with self.engine.connect() as conn:
            if not self.engine.dialect.has_table(conn, "schema_version"):
                return 0
            v = conn.execute(select(schema_version.c.version).order_by(
                schema_version.c.version.desc()).limit(1)).scalar()
            return int(v or 0)

    def _private(self) -> None:
        """The SQLite file and its -wal/-shm are the user's only (0600), old ones included."""
        if not self.url.startswith("sqlite:///") or self.url == "sqlite:///:memory:":
            return
        path = Path(self.url.removeprefix("sqlite:///"))
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            try:
                p.chmod(0o600)
            except OSError:  # absent (no WAL yet), or not ours
                pass

    def init(self) -> int:
        """Create or upgrade the schema to the version this code knows; return that version."""
        current = self.version()
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"database {self.url} has schema version {current}, newer than this afinar "
                f"({SCHEMA_VERSION}); upgrade afinar"
            )
        with self.engine.begin() as conn:
            _version_md.create_all(conn, checkfirst=True)
            done = set(conn.execute(select(schema_version.c.version)).scalars())
            for version, description, step in MIGRATIONS:
                if version in done:
                    continue
                step(conn)
                conn.execute(schema_version.insert().values(
                    version=version, description=description, applied_at=int(time.time())))
        self._private()
        return SCHEMA_VERSION

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on any exception."""
        with self._sessions() as s, s.begin():
            yield s

    def journal_mode(self) -> str | None:
        if self.engine.dialect.name != "sqlite":
            return None
        with self.engine.connect() as conn:
            return conn.exec_driver_sql("PRAGMA journal_mode").scalar()


_cache: dict[str, Database] = {}
_lock = threading.Lock()


def get_database(url: str | None = None) -> Database:
    """The process-wide database for ``url`` (default: the settings'), initialised once."""
    if url is None:
        from afinar.settings import get_settings

        url = get_settings().db_url
    with _lock:
        db = _cache.get(url)
        if db is None:
            db = Database(url)
            db.init()
            _cache[url] = db
        return db


def reset_databases() -> None:
    with _lock:
        for db in _cache.values():
            db.engine.dispose()
        _cache.clear()
