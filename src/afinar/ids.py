"""OpenAI-style identifiers: ``file-…``, ``ftjob-…``, ``vs_…``."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A random id with OpenAI's look, e.g. ``new_id("file-")`` -> ``file-3Fq…``."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))
