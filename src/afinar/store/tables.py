"""The current shape of the database, as SQLAlchemy ORM classes.

Each change of shape also adds a step to ``migrations.py``; ``Database.init`` brings any older
database up to date, so a user's state survives upgrades.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ModelRecord(Base):
    """A model users registered (``afinar models add``) or produced (fine-tuning).

    Built-in models are not stored: the catalog derives them from the installed wheels.
    """

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # chat | embedding
    format: Mapped[str] = mapped_column(String(32))  # gguf | hf | sentence-transformers
    path: Mapped[str] = mapped_column(String(4096))
    base_model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    parameters: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    context_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    owned_by: Mapped[str] = mapped_column(String(256), default="user")
    created_at: Mapped[int] = mapped_column(BigInteger, default=lambda: int(time.time()))
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class FileRecord(Base):
    """An uploaded file (OpenAI Files API); its bytes live in the blob store under ``sha256``.

    ``owner_key_id`` and ``owner_groups`` record the API key that uploaded it and that key's
    groups at the time (both empty for files made by the CLI, a job or local development mode):
    ``groups`` are set when someone restricts the file (``None`` until then); ``project_id``:
    the project it belongs to. Who may read it: ``afinar.store.access``."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default="processed")
    created_at: Mapped[int] = mapped_column(BigInteger, default=lambda: int(time.time()))
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    owner_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    owner_groups: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    groups: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    project_id: Mapped[str] = mapped_column(String(64), default="default")


class JobRecord(Base):
    """A fine-tuning job with OpenAI's fields; ``requested`` carries cancel/pause requests,
    ``worker``/``heartbeat_at`` the lease (who holds it, when it was last renewed) and ``queue``
    which workers may take it."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(256))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    method: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seed: Mapped[int] = mapped_column(BigInteger)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    result_files: Mapped[list[str]] = mapped_column(JSON, default=list)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=lambda: int(time.time()))
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    requested: Mapped[str | None] = mapped_column(String(16), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    project_id: Mapped[str] = mapped_column(String(64), default="default")
    owner_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    owner_groups: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    queue: Mapped[str] = mapped_column(String(64), default="default", index=True)


class EventRecord(Base):
    __tablename__ = "job_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=lambda: int(time.time()))
    level: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(String(4096))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class CheckpointRecord(Base):
    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    step_number: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[str] = mapped_column(String(300))
    path: Mapped[str] = mapped_column(String(4096))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[int] = mapped_column(BigInteger, default=lambda: int(time.time()))


class KbRecord(Base):
    """A knowledge base; ``version`` increases with every change so index caches know when they
    are stale."""

    __tablename__ = "kbs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    embedding_model: Mapped[str] = mapped_column(String(256))
    dimensions: Mapped[int] = mapped_column(Integer)
    chunking: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger, default=lambda: int(time.time()))
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    project_id: Mapped[str] = mapped_column(String(64), default="default")
    owner_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class KbDocument(Base):
    """One source document: identified by source path + content hash; ``groups`` may read it
    (empty: everyone)."""

    __tablename__ = "kb_documents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kb_id: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(4096))
    sha256: Mapped[str] = mapped_column(String(64))
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    n_chunks: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=lambda: int(time.time()))
    updated_at: Mapped[int] = mapped_column(BigInteger, default=lambda: int(time.time()))


class KbChunk(Base):
    """A chunk with its text and its normalised embedding (float32 bytes)."""

    __tablename__ = "kb_chunks"

    rowid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kb_id: Mapped[str] = mapped_column(String(64), index=True)
    doc_id: Mapped[str] = mapped_column(String(64), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(String)
    heading_path: Mapped[list[str]] = mapped_column(JSON, default=list)
    pages: Mapped[list[int]] = mapped_column(JSON, default=list)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    n_tokens: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    norm: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    """An API key for the server; only its SHA-256 is stored (the key is shown once).
    ``groups`` become the caller's access-control groups in retrieval; an ``admin`` key reads
    everything, manages keys and deletes models."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=lambda: int(time.time()))
    last_used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    groups: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    project_id: Mapped[str] = mapped_column(String(64), default="default")
    owner: Mapped[bool] = mapped_column(Boolean, default=False)


class Project(Base):
    """A project (as OpenAI has them): keys and everything they make belong to one."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # its name
    created_at: Mapped[int] = mapped_column(BigInteger, default=lambda: int(time.time()))


class AuditEntry(Base):
    """One line of the audit log: who (key id, name, project) did what (``POST /v1/files``),
    to which object, when, and the HTTP status it got."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[float] = mapped_column(Float)
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    key_name: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(300))
    object_id: Mapped[str | None] = mapped_column(String(300), nullable=True)
    status: Mapped[int] = mapped_column(Integer)


class AliasRecord(Base):
    """A model alias (``afinar models alias NAME MODEL``): the stable name clients send as
    ``model``; ``model`` is the catalog id it stands for now (read on every request)."""

    __tablename__ = "model_aliases"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    model: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AliasEvent(Base):
    """One line of an alias's history: ``action`` set | move | delete | promote | refuse (a
    promotion that did not move it), who did it, from and to which model, and why."""

    __tablename__ = "model_alias_history"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(256), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(256))
    from_model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    to_model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    reason: Mapped[str | None] = mapped_column(String, nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
