"""Schema versions, applied in order by ``Database.init``.

Hand-written rather than Alembic: afinar migrates its own embedded database at start-up, with no
migration scripts folder or env.py to ship; each step is a few lines of SQLAlchemy DDL on a frozen
table definition (never the live ORM classes, which move on). Steps are idempotent
(``checkfirst``) so two processes starting at once cannot trip over each other.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import JSON, BigInteger, Column, Connection, Integer, MetaData, String, Table


def _v1(conn: Connection) -> None:
    md = MetaData()
    Table(
        "models",
        md,
        Column("id", String(256), primary_key=True),
        Column("kind", String(32), nullable=False),
        Column("format", String(32), nullable=False),
        Column("path", String(4096), nullable=False),
        Column("base_model", String(256)),
        Column("parameters", BigInteger),
        Column("context_length", Integer),
        Column("size_bytes", BigInteger),
        Column("owned_by", String(256), nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("info", JSON, nullable=False),
    )
    md.create_all(conn, checkfirst=True)


def _v2(conn: Connection) -> None:
    md = MetaData()
    Table(
        "files", md,
        Column("id", String(64), primary_key=True),
        Column("purpose", String(32), nullable=False),
        Column("filename", String(512), nullable=False),
        Column("bytes", BigInteger, nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("status", String(32), nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("info", JSON, nullable=False),
    )
    Table(
        "jobs", md,
        Column("id", String(64), primary_key=True),
        Column("model", String(256), nullable=False),
        Column("training_file", String(64), nullable=False),
        Column("validation_file", String(64)),
        Column("status", String(32), nullable=False, index=True),
        Column("method", JSON, nullable=False),
        Column("hyperparameters", JSON, nullable=False),
        Column("seed", BigInteger, nullable=False),
        Column("suffix", String(64)),
        Column("fine_tuned_model", String(256)),
        Column("trained_tokens", BigInteger),
        Column("error", JSON),
        Column("result_files", JSON, nullable=False),
        Column("metadata", JSON),
        Column("created_at", BigInteger, nullable=False),
        Column("started_at", BigInteger),
        Column("finished_at", BigInteger),
        Column("estimated_finish", BigInteger),
        Column("requested", String(16)),
        Column("worker", String(128)),
        Column("heartbeat_at", BigInteger),
        Column("info", JSON, nullable=False),
    )
    Table(
        "job_events", md,
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("id", String(64), nullable=False, unique=True),
        Column("job_id", String(64), nullable=False, index=True),
        Column("created_at", BigInteger, nullable=False),
        Column("level", String(8), nullable=False),
        Column("type", String(16), nullable=False),
        Column("message", String(4096), nullable=False),
        Column("data", JSON),
    )
    Table(
        "checkpoints", md,
        Column("id", String(64), primary_key=True),
        Column("job_id", String(64), nullable=False, index=True),
        Column("step_number", Integer, nullable=False),
        Column("model_id", String(300), nullable=False),
        Column("path", String(4096), nullable=False),
        Column("metrics", JSON, nullable=False),
        Column("created_at", BigInteger, nullable=False),
    )
    md.create_all(conn, checkfirst=True)


def _v3(conn: Connection) -> None:
    from sqlalchemy import Float, LargeBinary

    md = MetaData()
    Table(
        "kbs", md,
        Column("id", String(64), primary_key=True),
        Column("name", String(128), nullable=False, unique=True),
        Column("embedding_model", String(256), nullable=False),
        Column("dimensions", Integer, nullable=False),
        Column("chunking", JSON, nullable=False),
        Column("version", Integer, nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("info", JSON, nullable=False),
    )
    Table(
        "kb_documents", md,
        Column("id", String(64), primary_key=True),
        Column("kb_id", String(64), nullable=False, index=True),
        Column("source", String(4096), nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("groups", JSON, nullable=False),
        Column("attributes", JSON, nullable=False),
        Column("status", String(16), nullable=False),
        Column("n_chunks", Integer, nullable=False),
        Column("error", String(2048)),
        Column("created_at", BigInteger, nullable=False),
        Column("updated_at", BigInteger, nullable=False),
    )
    Table(
        "kb_chunks", md,
        Column("rowid", Integer, primary_key=True, autoincrement=True),
        Column("kb_id", String(64), nullable=False, index=True),
        Column("doc_id", String(64), nullable=False, index=True),
        Column("idx", Integer, nullable=False),
        Column("text", String, nullable=False),
        Column("heading_path", JSON, nullable=False),
        Column("pages", JSON, nullable=False),
        Column("start", Integer, nullable=False),
        Column("end", Integer, nullable=False),
        Column("n_tokens", Integer, nullable=False),
        Column("vector", LargeBinary, nullable=False),
        Column("norm", Float, nullable=False),
    )
    md.create_all(conn, checkfirst=True)


def _v4(conn: Connection) -> None:
    md = MetaData()
    Table(
        "api_keys", md,
        Column("id", String(64), primary_key=True),
        Column("name", String(128), nullable=False),
        Column("prefix", String(16), nullable=False),
        Column("sha256", String(64), nullable=False, unique=True),
        Column("created_at", BigInteger, nullable=False),
        Column("last_used_at", BigInteger),
    )
    md.create_all(conn, checkfirst=True)


def _add_columns(conn: Connection, table: str, columns: list[Column]) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for the columns the table lacks (idempotent)."""
    from sqlalchemy import inspect

    have = {c["name"] for c in inspect(conn).get_columns(table)}
    prep = conn.dialect.identifier_preparer
    for col in columns:
        if col.name in have:
            continue
        ddl = f"ALTER TABLE {prep.quote(table)} ADD COLUMN {prep.quote(col.name)} " \
              f"{col.type.compile(dialect=conn.dialect)}"
        if col.server_default is not None:
            ddl += f" NOT NULL DEFAULT {col.server_default.arg.compile(dialect=conn.dialect)}"
        conn.exec_driver_sql(ddl)


def _v5(conn: Connection) -> None:
    from sqlalchemy import Boolean, false

    _add_columns(conn, "api_keys", [Column("groups", JSON),
                                    Column("admin", Boolean, server_default=false())])
    _add_columns(conn, "files", [Column("owner_key_id", String(64)),
                                 Column("owner_groups", JSON)])


def _v6(conn: Connection) -> None:
    """Projects (everything existing moves to ``default``), files' own reader groups, the
    creators of stores and jobs, owner keys, and the audit log."""
    from sqlalchemy import Boolean, Float, false, text

    def project() -> Column:
        return Column("project_id", String(64), server_default=text("'default'"))

    _add_columns(conn, "files", [Column("groups", JSON), project()])
    _add_columns(conn, "jobs", [project(), Column("owner_key_id", String(64)),
                                Column("owner_groups", JSON)])
    _add_columns(conn, "kbs", [project(), Column("owner_key_id", String(64))])
    _add_columns(conn, "api_keys", [project(), Column("owner", Boolean,
                                                      server_default=false())])
    md = MetaData()
    projects = Table(
        "projects", md,
        Column("id", String(64), primary_key=True),
        Column("created_at", BigInteger, nullable=False),
    )
    Table(
        "audit_log", md,
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("created_at", Float, nullable=False),
        Column("key_id", String(64), index=True),
        Column("key_name", String(128), nullable=False),
        Column("project_id", String(64), nullable=False),
        Column("action", String(300), nullable=False),
        Column("object_id", String(300)),
        Column("status", Integer, nullable=False),
    )
    md.create_all(conn, checkfirst=True)
    if conn.execute(projects.select().where(projects.c.id == "default")).first() is None:
        import time

        conn.execute(projects.insert().values(id="default", created_at=int(time.time())))


def _v7(conn: Connection) -> None:
    """Job queues (``afinar worker --queue NAME``): every existing job waits in ``default``."""
    from sqlalchemy import Index, text

    _add_columns(conn, "jobs", [Column("queue", String(64), server_default=text("'default'"))])
    jobs = Table("jobs", MetaData(), Column("queue", String(64)))
    Index("ix_jobs_queue", jobs.c.queue).create(conn, checkfirst=True)


def _v8(conn: Connection) -> None:
    """The request log (``AFINAR_LOG_REQUESTS``) and feedback on its answers
    (``afinar.store.feedback``)."""
    from sqlalchemy import Float

    md = MetaData()
    Table(
        "request_log", md,
        Column("id", String(64), primary_key=True),
        Column("kind", String(16), nullable=False),
        Column("model", String(256), nullable=False),
        Column("project_id", String(64), nullable=False),
        Column("owner_key_id", String(64)),
        Column("owner_groups", JSON),
        Column("created_at", Float, nullable=False, index=True),
        Column("prompt", JSON, nullable=False),
        Column("choices", JSON, nullable=False),
        Column("info", JSON, nullable=False),
    )
    Table(
        "feedback", md,
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("id", String(64), nullable=False, unique=True),
        Column("request_id", String(64), nullable=False, index=True),
        Column("type", String(16), nullable=False),
        Column("rating", Integer),
        Column("reason", String(4096)),
        Column("correction", String),
        Column("choice_index", Integer, nullable=False),
        Column("preferred_index", Integer),
        Column("created_at", Float, nullable=False),
        Column("key_id", String(64)),
        Column("key_name", String(128), nullable=False),
        Column("project_id", String(64), nullable=False),
        Column("info", JSON, nullable=False),
    )
    md.create_all(conn, checkfirst=True)


def _v9(conn: Connection) -> None:
    """Model aliases (``afinar models alias``): a stable name clients use as ``model``, and the
    history of its moves (who, when, from, to, why; promotions' decisions too)."""
    from sqlalchemy import Float

    md = MetaData()
    Table(
        "model_aliases", md,
        Column("name", String(256), primary_key=True),
        Column("model", String(256), nullable=False),
        Column("created_at", Float, nullable=False),
        Column("updated_at", Float, nullable=False),
        Column("info", JSON, nullable=False),
    )
    Table(
        "model_alias_history", md,
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("alias", String(256), nullable=False, index=True),
        Column("created_at", Float, nullable=False),
        Column("action", String(16), nullable=False),
        Column("actor", String(256), nullable=False),
        Column("from_model", String(256)),
        Column("to_model", String(256)),
        Column("reason", String),
        Column("info", JSON, nullable=False),
    )
    md.create_all(conn, checkfirst=True)

def _v10(conn: Connection) -> None:
    """Schedules (``afinar schedule``): afinar commands a worker runs every N seconds (or once),
    claimed under a lease, and the record of each run (exit status, output)."""
    from sqlalchemy import Float

    md = MetaData()
    Table(
        "schedules", md,
        Column("id", String(64), primary_key=True),
        Column("argv", JSON, nullable=False),
        Column("every_s", Float),
        Column("project_id", String(64), nullable=False),
        Column("owner_key_id", String(64)),
        Column("created_at", Float, nullable=False),
        Column("next_run_at", Float, index=True),
        Column("lease_owner", String(256)),
        Column("lease_until", Float),
        Column("runs", Integer, nullable=False),
        Column("last_run_at", Float),
        Column("last_status", Integer),
        Column("info", JSON, nullable=False),
    )
    Table(
        "schedule_runs", md,
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("schedule_id", String(64), nullable=False, index=True),
        Column("worker", String(256), nullable=False),
        Column("started_at", Float, nullable=False),
        Column("finished_at", Float),
        Column("exit_code", Integer),
        Column("output", String),
    )
    md.create_all(conn, checkfirst=True)


# (version, description, step). Append only; never edit a step that has shipped.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "models catalog", _v1),
    (2, "files, fine-tuning jobs, events, checkpoints", _v2),
    (3, "knowledge bases, documents, chunks with vectors", _v3),
    (4, "hashed API keys", _v4),
    (5, "API key groups and admin flag; the uploading key of files", _v5),
    (6, "projects, file reader groups, creators of stores and jobs, owner keys, audit log",
     _v6),
    (7, "job queues", _v7),
    (8, "request log and feedback on served answers", _v8),
    (9, "model aliases and the history of their moves", _v9),
    (10, "schedules of afinar commands and their runs", _v10),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]
