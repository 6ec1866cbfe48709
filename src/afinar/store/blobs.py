"""Content-addressed blob store: files named by the SHA-256 of their bytes under ``blobs/``.

Identical content is stored once; a blob never changes after it is written, so readers need no
locks. Digests coming from outside are validated before they touch a path.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from afinar.errors import InvalidRequest, NotFound

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    path: Path


class TooLarge(InvalidRequest):
    code = "file_too_large"
    http_status = 413


class BlobStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise InvalidRequest(f"not a sha256 digest: {digest!r}", param="digest")
        return self.root / "sha256" / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def get(self, digest: str) -> Blob:
        p = self.path(digest)
        if not p.is_file():
            raise NotFound(f"no blob {digest}")
        return Blob(digest, p.stat().st_size, p)

    def open(self, digest: str) -> BinaryIO:
        return open(self.get(digest).path, "rb")

    def read_bytes(self, digest: str) -> bytes:
        return self.get(digest).path.read_bytes()

    def put_bytes(self, data: bytes) -> Blob:
        import io

        return self.put_stream(io.BytesIO(data))

    def put_file(self, path: str | os.PathLike) -> Blob:
        with open(path, "rb") as f:
            return self.put_stream(f)

    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> Blob:
        """Copy a stream in, hashing as it goes; refuse (and keep nothing) past ``max_bytes``."""
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=f"{os.getpid()}-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise TooLarge(f"upload exceeds the limit of {max_bytes} bytes")
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            final = self.path(digest)
            if final.is_file():
                os.unlink(tmp)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            return Blob(digest, size, final)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def partial(self) -> list[tuple[int, Path]]:
        """Uploads being copied in (``tmp/<pid>-*.part``) with the pid of their process: what a
        killed process leaves (``afinar.server.vector_store_recovery.recover`` removes those of
        dead processes)."""
        out = []
        for p in (self.root / "tmp").glob("*.part"):
            pid = p.name.split("-", 1)[0]
            out.append((int(pid) if pid.isdigit() else 0, p))
        return out

    def delete(self, digest: str) -> bool:
        p = self.path(digest)
        if p.is_file():
            p.unlink()
            return True
        return False
