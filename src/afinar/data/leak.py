"""Leak checks between two files: which examples of one (a test or validation set) also appear
in the other (the training set), exactly, once normalized, or as near duplicates.

The three strengths are those of ``afinar.data.keys``; near duplicates are found by
``afinar.data.minhash`` and confirmed with their true Jaccard similarity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from afinar.data.keys import example_text, exact_key, group_key, preview
from afinar.data.minhash import near_pairs
from afinar.data.reader import Row
from afinar.data.split import read_clean
from afinar.errors import InvalidRequest


@dataclass
class LeakPair:
    kind: str  # exact | normalized | near
    train_line: int
    other_line: int
    similarity: float
    preview: str  # the other file's example
    train_preview: str


@dataclass
class LeakReport:
    train: str
    other: str
    threshold: float
    train_examples: int
    other_examples: int
    pairs: list[LeakPair]  # at most one per other example: its strongest match in train

    @property
    def counts(self) -> dict[str, int]:
        return {k: sum(p.kind == k for p in self.pairs) for k in ("exact", "normalized", "near")}

    @property
    def leaked_fraction(self) -> float:
        return len(self.pairs) / self.other_examples if self.other_examples else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts, "leaked": len(self.pairs),
                "leaked_fraction": self.leaked_fraction}


def check_leak(train_path: str | Path, other_path: str | Path,
               threshold: float = 0.8) -> LeakReport:
    """Examples of ``other`` that also appear in ``train``: exactly, once normalized, or as near
    duplicates (word-shingle Jaccard >= ``threshold``, found by MinHash/LSH and then confirmed)."""
    if not isinstance(threshold, int | float) or not 0.5 <= threshold <= 1:
        raise InvalidRequest(f"threshold must be between 0.5 and 1, not {threshold!r}",
                             param="threshold")
    train_rows, other_rows = read_clean(Path(train_path)), read_clean(Path(other_path))
    by_exact: dict[str, Row] = {}
    by_norm: dict[tuple[str, str], Row] = {}
    uniq: list[tuple[Row, str]] = []  # train examples, one per normalized group, for near search
    for r in train_rows:
        text = example_text(r.data)
        by_exact.setdefault(exact_key(r.data), r)
        key = group_key(r.data, text)
        if key not in by_norm:
            by_norm[key] = r
            uniq.append((r, text))
    pairs: list[LeakPair] = []
    rest: list[tuple[Row, str]] = []
    for r in other_rows:
        text = example_text(r.data)
        hit = by_exact.get(exact_key(r.data))
        kind = "exact"
        if hit is None:
            hit, kind = by_norm.get(group_key(r.data, text)), "normalized"
        if hit is None:
            rest.append((r, text))
        else:
            pairs.append(LeakPair(kind, hit.line, r.line, 1.0, preview(r.data),
                                  preview(hit.data)))
    for o, t, sim in near_pairs([t for _, t in uniq], [t for _, t in rest], threshold):
        (orow, _), (trow, _) = rest[o], uniq[t]
        pairs.append(LeakPair("near", trow.line, orow.line, round(sim, 4), preview(orow.data),
                              preview(trow.data)))
    pairs.sort(key=lambda p: p.other_line)
    return LeakReport(str(train_path), str(other_path), threshold, len(train_rows),
                      len(other_rows), pairs)
