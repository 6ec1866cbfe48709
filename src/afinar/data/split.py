"""Train/val/test splits without duplicates crossing them.

``split_file`` keeps every group of exact/normalized duplicates (``afinar.data.keys``) in one split
and stratifies by label when the examples form a label set by the validator's rules
(``afinar.data.validate.short_label`` and ``is_label_set``). Leak checks between two files are
``afinar.data.leak``.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from afinar.data.keys import example_text, field_text, group_key
from afinar.data.reader import Row, iter_rows
from afinar.data.validate import is_label_set, short_label
from afinar.errors import InvalidRequest
from afinar.store.atomic import atomic_write_bytes

SPLITS = ("train", "val", "test")


def label_of(data: Any) -> str | None:
    """The final assistant message (or ``completion``) when it is a short label, else None."""
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("messages"), list) and data["messages"]:
        last = data["messages"][-1]
        if not isinstance(last, dict) or last.get("role") != "assistant":
            return None
        value = last.get("content")
    elif "completion" in data and "prompt" in data:
        value = data["completion"]
    else:
        return None
    return short_label(field_text(value))


def read_clean(path: Path) -> list[Row]:
    """Every row of the file; the first problem (with its line) is raised as InvalidRequest."""
    if not path.is_file():
        raise InvalidRequest(f"{path}: no such file", param="file")
    rows = []
    for item in iter_rows(path):
        if not isinstance(item, Row):
            where = f"line {item.line}: " if item.line is not None else ""
            raise InvalidRequest(f"{path}: {where}{item.message} ({item.code}); fix the file "
                                 "first (afinar data validate)", param="file")
        rows.append(item)
    return rows


@dataclass
class SplitSummary:
    source: str
    seed: int
    fractions: dict[str, float]
    counts: dict[str, int]
    paths: dict[str, str]  # only the splits written (a split with fraction 0 is not)
    stratified: bool
    labels: dict[str, dict[str, int]]  # split -> label -> examples, when stratified
    duplicate_groups: int  # groups of exact/normalized duplicates, each kept in one split
    duplicate_rows: int  # examples beyond the first of each group
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_fractions(val: float, test: float) -> None:
    for name, v in (("val", val), ("test", test)):
        if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise InvalidRequest(f"{name} must be a fraction >= 0, not {v!r}", param=name)
    if val + test >= 1:
        raise InvalidRequest(f"val + test must be below 1 (got {val} + {test}): nothing would be "
                             "left to train on", param="val" if val >= test else "test")


def _allocate(sizes: dict[Any, int], want: dict[str, int], fractions: dict[str, float],
              rng: random.Random) -> dict[Any, dict[str, int]]:
    """Per-stratum val/test quotas that add up to ``want``: proportional floors, then the rest by
    largest remainder (ties broken by a seeded shuffle, so tiny classes are placed by the seed)."""
    keys = sorted(sizes, key=lambda k: (k is None, str(k)))
    rng.shuffle(keys)
    quota = {k: {"val": 0, "test": 0} for k in keys}
    for s in ("val", "test"):
        exact = {k: sizes[k] * fractions[s] for k in keys}
        for k in keys:
            quota[k][s] = min(int(exact[k]), sizes[k] - quota[k]["val"])
        short = want[s] - sum(q[s] for q in quota.values())
        order = sorted(keys, key=lambda k: -(exact[k] - int(exact[k])))  # stable: keeps rng order
        while short > 0:
            room = [k for k in order if quota[k]["val"] + quota[k]["test"] < sizes[k]]
            for k in room[:short]:
                quota[k][s] += 1
            short -= len(room[:short])
            if not room:
                break
    return quota


def split_file(path: str | Path, out_dir: str | Path | None = None, val: float = 0.1,
               test: float = 0.1, seed: int = 0, stratify: str = "auto") -> SplitSummary:
    """Split ``path`` into ``train/val/test.jsonl`` in ``out_dir`` (default: the file's folder).

    Deterministic for a given file and seed. Exact/normalized duplicates form groups that land in
    one split. With ``stratify="auto"`` and at least 90% of examples ending in a short label (at
    most 50 distinct), each label is split in proportion; otherwise the groups are shuffled with
    ``random.Random(seed)``. Each output line is the input line's bytes (rows of .json/.csv files
    are written as JSON), in input order, and each file is written atomically.
    """
    _check_fractions(val, test)
    if stratify not in ("auto", "none"):
        raise InvalidRequest(f"stratify must be auto or none, not {stratify!r}", param="stratify")
    src = Path(path)
    out = Path(out_dir) if out_dir is not None else src.parent
    fractions = {"train": round(1 - val - test, 12), "val": val, "test": test}
    paths = {s: out / f"{s}.jsonl" for s in SPLITS if fractions[s] > 0}
    for p in paths.values():
        if p.resolve() == src.resolve():
            raise InvalidRequest(f"writing {p} would overwrite the input; choose another output "
                                 "folder (--out)", param="out")
    rows = read_clean(src)
    n = len(rows)
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault(group_key(r.data, example_text(r.data)), []).append(r)
    row_labels = {r.line: label_of(r.data) for r in rows}
    distinct = {lb for lb in row_labels.values() if lb is not None}
    labelled = sum(lb is not None for lb in row_labels.values())
    stratified = stratify == "auto" and is_label_set(n, labelled, len(distinct))

    want = {s: int(n * fractions[s] + 0.5) for s in ("val", "test")}
    while n and want["val"] + want["test"] >= n:  # keep at least one training example
        want["test" if want["test"] >= want["val"] else "val"] -= 1
    strata: dict[Any, list[list[Row]]] = {}
    for g in groups.values():  # in order of first appearance
        strata.setdefault(row_labels[g[0].line] if stratified else None, []).append(g)
    rng = random.Random(seed)
    quota = _allocate({k: sum(map(len, gs)) for k, gs in strata.items()}, want, fractions, rng)
    dest: dict[int, str] = {}
    for k in sorted(strata, key=lambda k: (k is None, str(k))):
        gs, left = list(strata[k]), dict(quota[k])
        rng.shuffle(gs)
        for g in gs:
            s = next((s for s in ("val", "test") if left[s] >= len(g)), "train")
            if s != "train":
                left[s] -= len(g)
            dest.update((r.line, s) for r in g)

    counts = {s: sum(1 for r in rows if dest[r.line] == s) for s in SPLITS}
    for s, p in paths.items():
        atomic_write_bytes(p, b"".join(
            (r.raw if r.raw is not None else json.dumps(r.data, ensure_ascii=False).encode())
            + b"\n" for r in rows if dest[r.line] == s))
    labels: dict[str, dict[str, int]] = {}
    if stratified:
        for s in SPLITS:
            seen = Counter(row_labels[r.line] or "(no label)" for r in rows if dest[r.line] == s)
            labels[s] = dict(sorted(seen.items()))
    dups = [g for g in groups.values() if len(g) > 1]
    warnings = [f"{s} is empty: {n} examples ({len(groups)} once duplicates are grouped) are too "
                f"few for a fraction of {fractions[s]}" for s in ("val", "test")
                if s in paths and counts[s] == 0]
    return SplitSummary(str(src), seed, fractions, counts, {s: str(p) for s, p in paths.items()},
                        stratified, labels, len(dups), sum(len(g) - 1 for g in dups), warnings)
