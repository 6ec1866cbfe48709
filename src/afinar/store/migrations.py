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


# (version, description, step). Append only; never edit a step that has shipped.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "models catalog", _v1),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]
