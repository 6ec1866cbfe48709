"""Loss-mask previews: an example as training sees it, split into trained and untrained runs."""

from __future__ import annotations

from itertools import groupby

from afinar.data.encode import Encoded, encode_example
from afinar.data.formats import Example


def segments(tok, enc: Encoded) -> list[tuple[str, bool]]:
    """Consecutive (text, trained) runs; special tokens are shown, not hidden."""
    out: list[tuple[str, bool]] = []
    pairs = list(zip(enc.input_ids, enc.trained, strict=True))
    for trained, run in groupby(pairs, key=lambda p: p[1]):
        out.append((tok.decode([i for i, _ in run], skip_special_tokens=False), trained))
    return out


def example_segments(tok, ex: Example) -> list[list[tuple[str, bool]]]:
    """One segment list per sequence (two for a preference example: chosen, rejected)."""
    enc = encode_example(tok, ex)
    return [segments(tok, e) for e in (enc if isinstance(enc, tuple) else (enc,))]


def plain(segs: list[tuple[str, bool]], open_: str = "[[", close: str = "]]") -> str:
    return "".join(f"{open_}{t}{close}" if trained else t for t, trained in segs)
