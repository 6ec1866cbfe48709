"""Train/val/test splits without duplicates crossing them, and leak checks between two files.

Duplicates come in three strengths:

- exact: the same JSON value, ignoring key order, whitespace and ``weight`` keys (``exact_key``);
- normalized: the same text once casefolded, stripped of punctuation and with whitespace collapsed
  (``normalize(example_text(...))``), so "Hello,  World!" matches "hello world";
- near: a Jaccard similarity of word shingles at or above a threshold (0.8 by default).

``split_file`` keeps every group of exact/normalized duplicates in one split and stratifies by label
when examples end in a short label; ``check_leak`` reports all three strengths between two files.

Near duplicates are found with MinHash and LSH banding, written here with numpy rather than taken
from a library: datasketch, the usual one, is not a dependency and works one document object at a
time, while the bulk arithmetic below is short and keeps 30k x 2k examples to a few seconds. Every
hash is fixed (words by keyed blake2b, mixing by splitmix64 with constant seeds; never Python's
``hash()``, which is salted per process), so results are the same in every run. Candidates from
LSH are confirmed with their true Jaccard similarity. Shingles are the word unigrams and bigrams
of the normalized text: a one-word change in a 20-word sentence keeps a Jaccard of about 0.86,
where word 3-grams alone would fall to 0.71, under the 0.8 default. Shingles found in over half of
the examples (a shared system prompt, a fixed instruction) are boilerplate and dropped when there
are 20 or more examples, or every example would resemble every other.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from afinar.data.reader import Row, iter_rows
from afinar.errors import InvalidRequest
from afinar.store.atomic import atomic_write_bytes

SPLITS = ("train", "val", "test")
MAX_LABEL_CHARS, MAX_LABEL_WORDS, MAX_LABELS, MIN_LABELLED = 32, 4, 50, 0.9

# ---------------------------------------------------------------------------- example text and keys


def _content_text(content: Any) -> str:
    """A message content as text: a string, or the text of ``{"type": "text", ...}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] if isinstance(p, dict) and isinstance(p.get("text"), str)
                         else p if isinstance(p, str) else "" for p in content)
    return json.dumps(content, sort_keys=True, ensure_ascii=False)


def _message_parts(msg: Any, role: str | None = None) -> list[tuple[str, str]]:
    if not isinstance(msg, dict):
        return [(role or "", _content_text(msg))]
    role = role or str(msg.get("role", ""))
    parts = [(role, _content_text(msg.get("content")))] if msg.get("content") is not None else []
    calls = list(msg.get("tool_calls") or []) + ([msg["function_call"]] if msg.get("function_call")
                                                 else [])
    for call in calls:
        fn = (call.get("function") or call) if isinstance(call, dict) else {}
        args = fn.get("arguments", "")
        args = args if isinstance(args, str) else json.dumps(args, sort_keys=True)
        parts.append((role, f"{fn.get('name', '')}({args})"))
    return parts


def _parts(data: Any) -> list[tuple[str, str]]:
    """(role, text) pieces of an example, in order, for every dataset format."""
    if not isinstance(data, dict):
        return [("", json.dumps(data, sort_keys=True, ensure_ascii=False))]
    if isinstance(data.get("messages"), list):
        return [p for m in data["messages"] for p in _message_parts(m)]
    if "preferred_output" in data or "non_preferred_output" in data:
        inp = data.get("input")
        msgs = inp.get("messages") if isinstance(inp, dict) else inp
        out = [p for m in (msgs if isinstance(msgs, list) else [msgs]) for p in _message_parts(m)]
        for key in ("preferred_output", "non_preferred_output"):
            val = data.get(key)
            for m in val if isinstance(val, list) else [val]:
                out += _message_parts(m, role=key)
        return out
    if "prompt" in data or "completion" in data:
        return [("user", _content_text(data.get("prompt"))),
                ("assistant", _content_text(data.get("completion")))]
    if "text" in data:
        return [("", _content_text(data["text"]))]
    return [(str(k), _content_text(v)) for k, v in data.items()]


def example_text(data: Any) -> str:
    """The text of an example for duplicate detection: ``role: content`` lines in message order
    (prompt/completion as user/assistant, preference outputs after the input), tool calls as
    ``name(arguments)``."""
    return "\n".join(f"{role}: {text}" if role else text for role, text in _parts(data))


def _without_weights(data: Any) -> Any:
    """``data`` with ``weight`` removed from its messages (and nowhere else: a tool schema may have
    a parameter called weight)."""
    if not isinstance(data, dict):
        return data

    def msgs(v: Any) -> Any:
        return [{k: x for k, x in m.items() if k != "weight"} if isinstance(m, dict) else m
                for m in v] if isinstance(v, list) else v

    out = {k: msgs(v) if k in ("messages", "preferred_output", "non_preferred_output") else v
           for k, v in data.items()}
    if isinstance(out.get("input"), dict):
        out["input"] = {k: msgs(v) if k == "messages" else v for k, v in out["input"].items()}
    return out


def exact_key(data: Any) -> str:
    """sha256 of the example's canonical JSON: key order, whitespace and weights do not count."""
    canon = json.dumps(_without_weights(data), sort_keys=True, ensure_ascii=False,
                       separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


class _Unpunct(dict):
    """A ``str.translate`` table that deletes Unicode punctuation (categories P*), filled lazily."""

    def __missing__(self, cp: int) -> int | None:
        self[cp] = None if unicodedata.category(chr(cp)).startswith("P") else cp
        return self[cp]


_UNPUNCT = _Unpunct()


def normalize(text: str) -> str:
    """Casefold, NFKC, punctuation removed, whitespace collapsed: ``"Hello,  World!"`` becomes
    ``"hello world"``."""
    text = text.casefold()
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.translate(_UNPUNCT).split())


def _group_key(data: Any, text: str) -> tuple[str, str]:
    """Equal for exact and normalized duplicates (an example with no words falls back to exact)."""
    norm = normalize(text)
    return ("n", norm) if norm else ("e", exact_key(data))


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
    text = _content_text(value).strip()
    ok = text and len(text) <= MAX_LABEL_CHARS and len(text.split()) <= MAX_LABEL_WORDS
    return text if ok else None


def _preview(data: Any, limit: int = 80) -> str:
    text = " | ".join(t for role, t in _parts(data) if role != "system" and t.strip())
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_clean(path: Path) -> list[Row]:
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


# -------------------------------------------------------------------------------------- splitting


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
    rows = _read_clean(src)
    n = len(rows)
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault(_group_key(r.data, example_text(r.data)), []).append(r)
    row_labels = {r.line: label_of(r.data) for r in rows}
    distinct = {lb for lb in row_labels.values() if lb is not None}
    labelled = sum(lb is not None for lb in row_labels.values())
    stratified = (stratify == "auto" and labelled >= MIN_LABELLED * n
                  and 2 <= len(distinct) <= MAX_LABELS)

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


# ------------------------------------------------------------------------------- near duplicates
# (MinHash/LSH: see the module docstring.) Shingles are 40-bit hashes; signatures are uint32.

NUM_PERM, BOILERPLATE_DF, BOILERPLATE_MIN_DOCS, PREFILTER_MARGIN = 128, 0.5, 20, 0.2
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN, _LOW40 = np.uint64(0x9E3779B97F4A7C15), np.uint64((1 << 40) - 1)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection on uint64 with good avalanche."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8, key=b"afinar").digest(),
                          "little")


def _shingles(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every text's shingles as 40-bit hashes in one array, grouped by text, sorted and unique
    within each, boilerplate removed: text i has ``sh[bounds[i]:bounds[i + 1]]``."""
    if len(texts) >= 1 << 24:
        raise InvalidRequest("a leak check takes at most 16M examples", param="file")
    vocab: dict[str, int] = {}
    ids: list[int] = []
    lens = []
    for t in texts:
        words = normalize(t).split()
        ids += [vocab.setdefault(w, len(vocab)) for w in words]
        lens.append(len(words))
    flat = np.fromiter(map(_word_hash, vocab), dtype=np.uint64, count=len(vocab))[
        np.array(ids, dtype=np.int64)]
    doc = np.repeat(np.arange(len(texts), dtype=np.uint64), lens)
    same = doc[:-1] == doc[1:]
    with np.errstate(over="ignore"):
        bigrams = _mix((flat[:-1] * _GOLDEN) ^ flat[1:])[same]
    hashes = np.concatenate([_mix(flat), bigrams]) >> np.uint64(24)
    keys = np.sort((np.concatenate([doc, doc[:-1][same]]) << np.uint64(40)) | hashes)
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # (np.unique's hashing is slower here)
    sd, sh = keys >> np.uint64(40), keys & _LOW40
    if len(texts) >= BOILERPLATE_MIN_DOCS:  # a shingle's count over texts: its document frequency
        runs = np.sort(sh)
        edges = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1], True])
        common = runs[edges[:-1]][np.diff(edges) > BOILERPLATE_DF * len(texts)]
        if len(common):
            keep = ~np.isin(sh, common)
            sd, sh = sd[keep], sh[keep]
    return sh, np.searchsorted(sd, np.arange(len(texts) + 1, dtype=np.uint64))


def _signatures(sh: np.ndarray, starts: np.ndarray, num_perm: int) -> np.ndarray:
    """MinHash signatures (texts x num_perm, uint32) of the non-empty texts starting at ``starts``
    in ``sh`` (in order, together covering it): permutations ``a * x + b`` mod 2**32, odd ``a``."""
    x = (sh & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    params = (_mix(np.arange(1, 2 * num_perm + 1, dtype=np.uint64)) >> np.uint64(32))
    a, b = params[:num_perm].astype(np.uint32) | np.uint32(1), params[num_perm:].astype(np.uint32)
    sig = np.empty((len(starts), num_perm), dtype=np.uint32)
    v = np.empty_like(x)
    for i in range(num_perm):
        np.add(np.multiply(x, a[i], out=v), b[i], out=v)
        sig[:, i] = np.minimum.reduceat(v, starts)
    return sig


def _bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows): the most rows per band that still makes a pair at ``threshold`` a candidate
    with probability >= 0.995 (fewer rows: more candidates, all confirmed anyway)."""
    rows = 1
    while rows < num_perm and 1 - (1 - threshold ** (rows + 1)) ** (num_perm // (rows + 1)) >= .995:
        rows += 1
    return num_perm // rows, rows


def _near_pairs(train: list[str], other: list[str],
                threshold: float) -> list[tuple[int, int, float]]:
    """(other index, train index, Jaccard) for each ``other`` text's most similar ``train`` text,
    when that similarity is >= ``threshold``."""
    sh, bounds = _shingles(train + other)
    live = np.flatnonzero(bounds[1:] > bounds[:-1])
    t_idx, o_idx = live[live < len(train)], live[live >= len(train)]
    with np.errstate(over="ignore"):  # train texts with one shingle set are searched once
        sums = np.concatenate([np.zeros(1, np.uint64), np.cumsum(_mix(sh))])
        fingerprint = sums[bounds[t_idx + 1]] - sums[bounds[t_idx]]
    t_idx = t_idx[np.sort(np.unique(fingerprint, return_index=True)[1])]
    if not len(t_idx) or not len(o_idx):
        return []
    sig = np.zeros((len(bounds) - 1, NUM_PERM), dtype=np.uint32)
    sig[live] = _signatures(sh, bounds[live], NUM_PERM)
    bands, rows = _bands(threshold, NUM_PERM)
    codes = []
    for b in range(bands):
        key = np.zeros(len(sig), dtype=np.uint64)
        for c in range(b * rows, (b + 1) * rows):
            key = _mix(key ^ sig[:, c].astype(np.uint64))
        kt, ko = key[t_idx], key[o_idx]
        order = np.argsort(kt, kind="stable")
        lo, hi = np.searchsorted(kt[order], ko, "left"), np.searchsorted(kt[order], ko, "right")
        n = hi - lo
        pos = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo, n)
        codes.append(o_idx[np.repeat(np.arange(len(o_idx)), n)] * len(sig) + t_idx[order[pos]])
    cand = np.unique(np.concatenate(codes))
    oc, tc = cand // len(sig), cand % len(sig)
    est = np.concatenate([(sig[oc[i:i + 65536]] == sig[tc[i:i + 65536]]).mean(axis=1)
                          for i in range(0, len(cand), 65536)] or [np.zeros(0)])
    best: dict[int, tuple[float, int]] = {}
    for o, t in zip(oc[est >= threshold - PREFILTER_MARGIN].tolist(),
                    tc[est >= threshold - PREFILTER_MARGIN].tolist(), strict=True):
        x, y = sh[bounds[o]:bounds[o + 1]], sh[bounds[t]:bounds[t + 1]]
        inter = np.intersect1d(x, y, assume_unique=True).size
        sim = inter / (len(x) + len(y) - inter)
        if sim >= threshold and sim > best.get(o, (-1.0, 0))[0]:  # ties: the earliest train text
            best[o] = (sim, t)
    return [(o - len(train), t, sim) for o, (sim, t) in sorted(best.items())]


# ----------------------------------------------------------------------------------- leak check


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
    train_rows, other_rows = _read_clean(Path(train_path)), _read_clean(Path(other_path))
    by_exact: dict[str, Row] = {}
    by_norm: dict[tuple[str, str], Row] = {}
    uniq: list[tuple[Row, str]] = []  # train examples, one per normalized group, for near search
    for r in train_rows:
        text = example_text(r.data)
        by_exact.setdefault(exact_key(r.data), r)
        key = _group_key(r.data, text)
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
            hit, kind = by_norm.get(_group_key(r.data, text)), "normalized"
        if hit is None:
            rest.append((r, text))
        else:
            pairs.append(LeakPair(kind, hit.line, r.line, 1.0, _preview(r.data),
                                  _preview(hit.data)))
    for o, t, sim in _near_pairs([t for _, t in uniq], [t for _, t in rest], threshold):
        (orow, _), (trow, _) = rest[o], uniq[t]
        pairs.append(LeakPair("near", trow.line, orow.line, round(sim, 4), _preview(orow.data),
                              _preview(trow.data)))
    pairs.sort(key=lambda p: p.other_line)
    return LeakReport(str(train_path), str(other_path), threshold, len(train_rows),
                      len(other_rows), pairs)
