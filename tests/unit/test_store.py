import hashlib
import io

import pytest
from sqlalchemy import text

from afinar.errors import InvalidRequest, NotFound
from afinar.store import BlobStore, Database, atomic_dir, atomic_write_text
from afinar.store.blobs import TooLarge
from afinar.store.db import SchemaTooNew
from afinar.store.migrations import SCHEMA_VERSION
from afinar.store.tables import ModelRecord


def test_init_creates_versioned_schema_in_wal_mode(db_url, db_backend):
    db = Database(db_url)
    assert db.version() == 0
    assert db.init() == SCHEMA_VERSION
    assert db.version() == SCHEMA_VERSION
    assert db.journal_mode() == ("wal" if db_backend == "sqlite" else None)
    assert db.init() == SCHEMA_VERSION  # idempotent
    with db.engine.connect() as c:
        n = c.execute(text("select count(*) from schema_version")).scalar()
    assert n == SCHEMA_VERSION


def test_newer_schema_is_refused(db_url):
    db = Database(db_url)
    db.init()
    with db.engine.begin() as c:
        c.execute(text("insert into schema_version values (999, 'future', 0)"))
    with pytest.raises(SchemaTooNew):
        Database(db_url).init()


def test_session_rolls_back_on_error(db_url):
    db = Database(db_url)
    db.init()
    rec = dict(id="m", kind="chat", format="hf", path="/x", owned_by="u", created_at=1, info={})
    with pytest.raises(RuntimeError), db.session() as s:
        s.add(ModelRecord(**rec))
        s.flush()
        raise RuntimeError("boom")
    with db.session() as s:
        assert s.get(ModelRecord, "m") is None
        s.add(ModelRecord(**rec))
    with Database(db_url).session() as s:  # visible to a new engine
        assert s.get(ModelRecord, "m").path == "/x"


def test_blobs_are_content_addressed_and_deduplicated(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = b"hello afinar\n" * 1000
    a = store.put_bytes(data)
    b = store.put_stream(io.BytesIO(data))
    assert a.digest == b.digest == hashlib.sha256(data).hexdigest()
    assert a.size == len(data)
    assert store.read_bytes(a.digest) == data
    assert len([p for p in (tmp_path / "blobs" / "sha256").rglob("*") if p.is_file()]) == 1
    assert store.delete(a.digest) and not store.exists(a.digest)
    with pytest.raises(NotFound):
        store.get(a.digest)


def test_blob_size_limit_keeps_nothing(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(TooLarge):
        store.put_stream(io.BytesIO(b"x" * 5000), max_bytes=4096)
    assert not any(p.is_file() for p in (tmp_path / "blobs").rglob("*"))


@pytest.mark.parametrize("digest", ["../../etc/passwd", "ab" * 31, "A" * 64, ""])
def test_untrusted_digests_never_become_paths(tmp_path, digest):
    with pytest.raises(InvalidRequest):
        BlobStore(tmp_path).path(digest)


def test_atomic_dir_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "weights").write_text("half")
        raise RuntimeError("crash mid-write")
    assert (target / "weights").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folders left
    with atomic_dir(target) as d:
        (d / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"


def test_atomic_write_text(tmp_path):
    p = atomic_write_text(tmp_path / "sub" / "f.json", "{}")
    assert p.read_text() == "{}"
    assert [x.name for x in p.parent.iterdir()] == ["f.json"]
