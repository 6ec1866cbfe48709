"""Keeping a knowledge base in sync with a folder as its files are added, changed and deleted
(``afinar kb watch``).

Polling: every ``interval`` seconds the folder's supported files are listed with their size and
modification time; when that listing differs from the last pass (and on the first pass) the
folder is synced with ``KbIngestion.sync``, which compares content hashes, replaces a changed
document's chunks in one transaction and removes deleted ones. Search reads the index at the
base's version and drops any hit whose chunk changed since (``KbSearch.search``), so no answer
comes from a deleted or replaced document while a pass runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from afinar.errors import InvalidRequest
from afinar.rag.ingest import IngestReport, KbIngestion, Progress, expand

Listing = dict[str, tuple[int, int]]  # path -> (size, mtime_ns)


@dataclass
class WatchPass:
    """One pass that synced: when, and what the sync did."""

    number: int
    at: float
    report: IngestReport


def listing(folder: Path) -> Listing:
    out: Listing = {}
    for p in expand([folder]):
        try:
            st = p.stat()
        except FileNotFoundError:  # deleted while listed: the next pass sees it gone
            continue
        out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


class FolderWatcher:
    """Syncs ``folder`` into the knowledge base ``kb`` whenever its listing changes."""

    def __init__(self, kbs: KbIngestion, kb: str, folder: str | Path,
                 groups: list[str] | None = None, attributes: dict | None = None):
        self.kbs, self.kb = kbs, kb
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise InvalidRequest(f"{self.folder}: not a folder", param="path")
        kbs.get(kb)  # an unknown base is refused before the first pass
        self.groups, self.attributes = groups, attributes
        self.last: Listing | None = None
        self.passes = 0

    def check(self, progress: Progress | None = None) -> WatchPass | None:
        """Sync when the folder changed since the last pass (always on the first); None when
        nothing changed."""
        now = listing(self.folder)
        if now == self.last:
            return None
        report = self.kbs.sync(self.kb, self.folder, self.groups, self.attributes, progress)
        # the listing the sync saw: a file changed during the sync differs next pass
        self.last = now
        self.passes += 1
        return WatchPass(self.passes, time.time(), report)

    def run(self, interval: float, on_pass: Callable[[WatchPass], None],
            stop: threading.Event | None = None, once: bool = False) -> int:
        """Check every ``interval`` seconds until ``stop`` is set (or once); passes synced."""
        stop = stop or threading.Event()
        synced = 0
        while True:
            p = self.check()
            if p is not None:
                synced += 1
                on_pass(p)
            if once or stop.wait(interval):
                return synced
