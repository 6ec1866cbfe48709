"""Ingestion killed mid-way leaves vector stores consistent once the server starts again (each
crash is a real process exit, ``os._exit``, at the critical point, in a subprocess on the same
AFINAR_HOME); deleting a file leaves no copy of its content anywhere under AFINAR_HOME."""

import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

from fastapi.testclient import TestClient

from afinar.server.app import create_app
from afinar.store.db import reset_databases
from afinar.store.tables import KbChunk, KbDocument

CRASH = textwrap.dedent("""
    import os, sys
    from fastapi.testclient import TestClient
    from afinar.rag.kb import KnowledgeBases
    from afinar.server.app import create_app

    mode, where = sys.argv[1], sys.argv[2]
    original = KnowledgeBases._commit
    def commit(self, *a, **kw):
        if where == "before_document":
            os._exit(137)
        original(self, *a, **kw)
        if where == "after_document":
            os._exit(137)  # the document is committed, its store bookkeeping is not
    with TestClient(create_app(auth=False)) as http:
        fid = http.post("/v1/files", files={"file": ("notes.md", sys.argv[3].encode())},
                        data={"purpose": "assistants"}).json()["id"]
        print(fid, flush=True)
        if mode == "add":
            sid = http.post("/v1/vector_stores", json={"name": "docs"}).json()["id"]
            print(sid, flush=True)
        KnowledgeBases._commit = commit
        if mode == "add":
            http.post(f"/v1/vector_stores/{sid}/files", json={"file_id": fid})
        else:
            http.post("/v1/vector_stores", json={"name": "docs", "file_ids": [fid]})
    os._exit(3)  # not reached: the crash happens inside ingestion
""")

TEXT = "# Router\n\nTo reset the router, hold the reset button for ten seconds. {marker}\n"


def crash(home: Path, mode: str, where: str, text: str) -> list[str]:
    """Run the crashing request in a subprocess; the ids it printed before dying."""
    env = {**os.environ, "AFINAR_HOME": str(home)}
    p = subprocess.run([sys.executable, "-c", CRASH, mode, where, text], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 137, p.stderr[-3000:]
    return p.stdout.split()


def restart():
    """The server starting again on the same AFINAR_HOME (start-up recovery runs)."""
    reset_databases()
    return TestClient(create_app(auth=False))


def staging_dirs(home: Path) -> list[Path]:
    return list(home.glob("vs-ingest-*"))


def test_killed_after_the_document_the_file_is_completed_with_its_name(home):
    fid, sid = crash(home, "add", "after_document", TEXT.format(marker=""))
    assert staging_dirs(home)  # what the crash left: hard links to the upload
    with restart() as http:
        assert not staging_dirs(home)
        files = http.get(f"/v1/vector_stores/{sid}/files").json()["data"]
        assert [(f["id"], f["status"]) for f in files] == [(fid, "completed")]
        hits = http.post(f"/v1/vector_stores/{sid}/search",
                         json={"query": "reset the router"}).json()["data"]
        assert hits and hits[0]["filename"] == "notes.md"  # not the file id
        store = http.get(f"/v1/vector_stores/{sid}").json()
        assert store["file_counts"]["completed"] == 1 and store["status"] == "completed"


def test_killed_before_the_document_the_file_is_failed_and_can_be_added_again(home):
    fid, sid = crash(home, "add", "before_document", TEXT.format(marker=""))
    with restart() as http:
        files = http.get(f"/v1/vector_stores/{sid}/files").json()["data"]
        assert [(f["id"], f["status"]) for f in files] == [(fid, "failed")]
        assert files[0]["last_error"]["code"] == "server_error"
        assert "interrupted" in files[0]["last_error"]["message"]
        again = http.post(f"/v1/vector_stores/{sid}/files", json={"file_id": fid}).json()
        assert again["status"] == "completed"
        hits = http.post(f"/v1/vector_stores/{sid}/search",
                         json={"query": "reset the router"}).json()["data"]
        assert hits[0]["filename"] == "notes.md"


def test_a_store_whose_creation_was_killed_is_gone(home):
    from afinar.settings import get_settings
    from afinar.store.db import get_database

    (fid,) = crash(home, "create", "after_document", TEXT.format(marker=""))
    with restart() as http:
        assert http.get("/v1/vector_stores").json()["data"] == []
        db = get_database(get_settings().db_url)
        with db.session() as s:
            assert s.query(KbDocument).count() == 0 and s.query(KbChunk).count() == 0
        assert not staging_dirs(home)
        assert http.get(f"/v1/files/{fid}").status_code == 200  # the upload itself stays
        # a creation that finishes clears its mark: the store is completed
        sid = http.post("/v1/vector_stores", json={"name": "x"}).json()["id"]
        assert http.get(f"/v1/vector_stores/{sid}").json()["status"] == "completed"


def _holding(home: Path, marker: bytes) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.is_file() and marker in p.read_bytes())


def test_deleting_a_file_leaves_no_copy_of_its_content(home):
    marker = f"quokkamarker{secrets.token_hex(4)}"
    fid, sid = crash(home, "add", "after_document", TEXT.format(marker=marker))
    with restart() as http:
        # a staging folder leaked by a crash that recovery has not seen yet
        stage = home / "vs-ingest-999999-leak"
        stage.mkdir()
        other = http.post("/v1/vector_stores", json={"name": "other"}).json()["id"]
        assert http.post(f"/v1/vector_stores/{other}/files",
                         json={"file_id": fid}).json()["status"] == "completed"
        from afinar.store.files import Files

        os.link(Files().path(fid), stage / f"{fid}.md")
        for store in (sid, other):
            hits = http.post(f"/v1/vector_stores/{store}/search",
                             json={"query": marker}).json()["data"]
            assert hits and marker in hits[0]["content"][0]["text"]
        before = _holding(home, marker.encode())
        assert any(p.startswith("blobs/") for p in before), before
        assert any(p.startswith("kb/") for p in before), before  # the lexical index
        assert any(p.startswith("vs-ingest-") for p in before), before
        assert any(p.startswith("afinar.db") for p in before), before

        r = http.delete(f"/v1/files/{fid}")
        assert r.status_code == 200 and r.json()["deleted"] is True
        assert _holding(home, marker.encode()) == []
        for store in (sid, other):  # as OpenAI: removed from every vector store
            assert http.get(f"/v1/vector_stores/{store}/files").json()["data"] == []
            assert http.get(f"/v1/vector_stores/{store}/files/{fid}").status_code == 404
            assert http.post(f"/v1/vector_stores/{store}/search",
                             json={"query": marker}).json()["data"] == []


def test_partial_uploads_of_dead_processes_are_removed_at_start(home):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    tmp = home / "blobs" / "tmp"
    tmp.mkdir(parents=True)
    dead, live = tmp / f"{gone}-x.part", tmp / f"{os.getpid()}-y.part"
    dead.write_bytes(b"half an upload")
    live.write_bytes(b"an upload this process is copying in")
    with restart():
        assert not dead.exists() and live.exists()
