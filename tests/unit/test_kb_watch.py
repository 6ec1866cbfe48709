"""``afinar kb watch``: a knowledge base kept equal to a folder as files are added, changed and
deleted, a sync report per pass; and no search ever answers from a deleted or replaced
document, even while a sync runs and queries run at the same time."""

from __future__ import annotations

import os
import re
import threading
import time

import pytest

from afinar.rag.kb import KnowledgeBases
from afinar.rag.watch import FolderWatcher
from tests.helpers import run_cli

MARK = re.compile(r"\bmark(\d+)x(\d+)\b")


def doc(i: int, v: int) -> str:
    return (f"# Router {i}\n\nThe router reset code of model {i} is mark{i}x{v}. Hold the "
            f"reset button, then type mark{i}x{v} to reset the router.\n")


def write(folder, i: int, v: int) -> None:
    p = folder / f"doc{i}.md"
    p.write_text(doc(i, v))
    t = time.time() + v  # a new version always has a new modification time
    os.utime(p, (t, t))


def names(paths) -> list[str]:
    return sorted(p.rsplit("/", 1)[-1] for p in paths)


def test_watch_reports_added_changed_deleted(home, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        write(folder, i, 0)
    kbs = KnowledgeBases()
    kbs.create("support")
    w = FolderWatcher(kbs, "support", folder)
    p = w.check()
    assert p.number == 1 and names(p.report.added) == ["doc0.md", "doc1.md", "doc2.md"]
    assert w.check() is None  # nothing changed: no sync
    write(folder, 1, 1)
    write(folder, 3, 0)
    (folder / "doc2.md").unlink()
    p = w.check()
    assert names(p.report.updated) == ["doc1.md"] and names(p.report.added) == ["doc3.md"]
    assert names(p.report.deleted) == ["doc2.md"] and names(p.report.unchanged) == ["doc0.md"]
    assert names(d.source for d in kbs.documents("support")) == ["doc0.md", "doc1.md",
                                                                 "doc3.md"]
    hits = kbs.search("support", "reset code of model 1", k=10)
    texts = " ".join(h.text for h in hits)
    assert "mark1x1" in texts and "mark1x0" not in texts and "mark2x0" not in texts
    os.utime(folder / "doc0.md")  # touched, same content: synced, reported unchanged
    p = w.check()
    assert p is not None and not (p.report.added or p.report.updated or p.report.deleted)


def test_no_search_answers_from_a_deleted_or_replaced_document(home, tmp_path):
    """Files are replaced and deleted pass after pass while a thread searches in a loop: no hit
    ever carries a version that was gone before its search began, every hit's text is its own
    document's, and no search fails."""
    folder = tmp_path / "docs"
    folder.mkdir()
    n_docs = 6
    version = {i: 0 for i in range(n_docs)}
    for i in range(n_docs):
        write(folder, i, 0)
    kbs = KnowledgeBases()
    kbs.create("support")
    w = FolderWatcher(kbs, "support", folder)
    w.check()
    dead: set[str] = set()  # versions removed by a finished pass
    lock, stop = threading.Lock(), threading.Event()
    bad: list[str] = []
    searches, during = [0], [0]  # searches; those begun while a pass was syncing
    syncing = threading.Event()

    def search() -> None:
        modes = ("hybrid", "dense", "lexical", "weighted")
        while not stop.is_set():
            with lock:
                gone = set(dead)
            during[0] += syncing.is_set()
            try:
                hits = kbs.search("support", "router reset code", k=10,
                                  mode=modes[searches[0] % len(modes)])
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                bad.append(f"search failed: {type(e).__name__}: {e}")
                continue
            searches[0] += 1
            for h in hits:
                marks = set(MARK.findall(h.text))
                for i, v in marks:
                    if f"mark{i}x{v}" in gone:
                        bad.append(f"hit from a removed version mark{i}x{v}")
                    if not h.source.endswith(f"/doc{i}.md"):
                        bad.append(f"{h.source} shows the text of doc{i}.md")

    t = threading.Thread(target=search)
    t.start()
    try:
        for rnd in range(12):
            removed = []
            for i in (rnd % n_docs, (rnd + 2) % n_docs, (rnd + 3) % n_docs):
                if i == (rnd + 3) % n_docs:  # delete one (it comes back a later round)
                    p = folder / f"doc{i}.md"
                    if p.exists():
                        p.unlink()
                        removed.append(f"mark{i}x{version[i]}")
                        continue
                old = version[i]
                version[i] += 1
                if (folder / f"doc{i}.md").exists():
                    removed.append(f"mark{i}x{old}")
                write(folder, i, version[i])
            syncing.set()
            assert w.check() is not None
            syncing.clear()
            with lock:
                dead.update(removed)
    finally:
        stop.set()
        t.join()
    assert not bad, bad[:5]
    assert during[0] >= 5 and len(dead) >= 24, (searches, during)
    final = " ".join(h.text for h in kbs.search("support", "router reset code", k=20))
    assert not set(f"mark{i}x{v}" for i, v in MARK.findall(final)) & dead
    assert kbs.check("support")["ok"]


def test_cli_watch_once_and_errors(home, tmp_path, capsys, monkeypatch):
    from afinar.cli import common

    folder = tmp_path / "docs"
    folder.mkdir()
    write(folder, 0, 0)
    write(folder, 1, 0)
    KnowledgeBases().create("support")
    monkeypatch.setattr(common.console, "width", 80)
    code, out, err = run_cli(capsys, "kb", "watch", "support", str(folder), "--once")
    assert code == 0, err
    lines = out.splitlines()
    assert "pass 1: added 2, changed 0, deleted 0, unchanged 0" in lines[0]
    assert lines[1:] == ["  + doc0.md", "  + doc1.md"]
    (folder / "doc0.md").unlink()
    code, out, _ = run_cli(capsys, "kb", "watch", "support", str(folder), "--once")
    assert code == 0 and "deleted 1" in out and "  - doc0.md" in out
    assert all(len(line) <= 80 for line in out.splitlines())
    for argv, message in (
            ([str(tmp_path / "nope")], "no such file or folder"),
            ([str(folder), "--interval", "2x"], "not a duration"),
            ([str(folder), "--interval", "0s"], "under 0.1 seconds")):
        code, _, err = run_cli(capsys, "kb", "watch", "support", *argv, "--once")
        assert code == 2 and err.startswith("error: ") and message in err, err
    code, _, err = run_cli(capsys, "kb", "watch", "nope", str(folder), "--once")
    assert code == 2 and "no knowledge base 'nope'" in err
