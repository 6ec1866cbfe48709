"""Near duplicates: MinHash signatures and LSH banding over word shingles, confirmed by Jaccard.

Written here with numpy rather than taken from a library: datasketch, the usual one, is not a
dependency and works one document object at a time, while the bulk arithmetic below is short and
keeps 30k x 2k examples to a few seconds. Every hash is fixed (words by keyed blake2b, mixing by
splitmix64 with constant seeds; never Python's ``hash()``, which is salted per process), so
results are the same in every run. Candidates from LSH are confirmed with their true Jaccard
similarity. Shingles are the word unigrams and bigrams of the normalized text
(``afinar.data.keys.normalize``): a one-word change in a 20-word sentence keeps a Jaccard of about
0.86, where word 3-grams alone would fall to 0.71, under the 0.8 default. Shingles found in over
half of the examples (a shared system prompt, a fixed instruction) are boilerplate and dropped
when there are 20 or more examples, or every example would resemble every other.

Shingles are 40-bit hashes; signatures are uint32.
"""

from __future__ import annotations

import hashlib

import numpy as np

from afinar.data.keys import normalize
from afinar.errors import InvalidRequest

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


def near_pairs(train: list[str], other: list[str],
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



def near_duplicates(texts: list[str], threshold: float) -> list[tuple[int, int, float]]:
    """(index, earlier index, Jaccard) for each text that is a near duplicate (Jaccard >=
    ``threshold``) of an earlier text of the same list: its most similar earlier one (ties: the
    earliest). The one-list form of ``near_pairs``, for deduplicating a set against itself."""
    if sum(bool(normalize(t)) for t in texts) < 2:
        return []  # (nothing to compare; _shingles needs a word)
    sh, bounds = _shingles(texts)
    live = np.flatnonzero(bounds[1:] > bounds[:-1])
    if len(live) < 2:
        return []
    sig = _signatures(sh, bounds[live], NUM_PERM)
    bands, rows = _bands(threshold, NUM_PERM)
    cand: set[tuple[int, int]] = set()
    for b in range(bands):
        key = np.zeros(len(live), dtype=np.uint64)
        for c in range(b * rows, (b + 1) * rows):
            key = _mix(key ^ sig[:, c].astype(np.uint64))
        order = np.argsort(key, kind="stable")
        ks = key[order]
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        for lo, hi in zip(starts.tolist(), [*starts[1:].tolist(), len(ks)], strict=True):
            members = np.sort(live[order[lo:hi]]).tolist()
            cand.update((j, i) for k, j in enumerate(members) for i in members[:k])
    best: dict[int, tuple[float, int]] = {}
    for j, i in sorted(cand):
        x, y = sh[bounds[j]:bounds[j + 1]], sh[bounds[i]:bounds[i + 1]]
        inter = np.intersect1d(x, y, assume_unique=True).size
        sim = inter / (len(x) + len(y) - inter)
        if sim >= threshold and sim > best.get(j, (-1.0, 0))[0]:
            best[j] = (sim, i)
    return [(j, i, sim) for j, (sim, i) in sorted(best.items())]
