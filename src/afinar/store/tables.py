"""The current shape of the database, as SQLAlchemy ORM classes.

Each change of shape also adds a step to ``migrations.py``; ``Database.init`` brings any older
database up to date, so a user's state survives upgrades.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String
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
