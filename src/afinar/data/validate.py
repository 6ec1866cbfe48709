"""Validate a dataset file for training: every problem with its line, field and code, plus exact
token statistics computed with the target model's tokenizer and chat template.

Errors block training (an upload for fine-tuning, a job): they make training impossible or wrong.
Warnings (duplicates, near duplicates, few examples, no system message, label imbalance, ...) are
reported with counts and lines and never block; ``dedupe_file`` drops exact duplicates. Which
code is which: ``afinar.data.issues.CODES`` and docs/data-validation.md.

Streaming: rows are read one at a time; what is kept per example is a few integers and two 8-byte
digests for duplicate detection, so memory stays bounded for files of gigabytes.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from afinar.data.encode import Encoded, TemplateError, encode_example
from afinar.data.formats import Example, content_text, detect, parse_example
from afinar.data.issues import CODES, Issue
from afinar.data.reader import Row, iter_rows
from afinar.data.keys import example_text, normalize
from afinar.data.stats import choose_epochs_and_batch, default_epochs, summary
from afinar.store.atomic import atomic_write_bytes

MIN_EXAMPLES, ADVISED_EXAMPLES = 10, 50  # the minimum is OpenAI's, for training files only
IMBALANCE_RATIO = 10  # most common label over least common one
LINES_SHOWN = 5  # lines listed per warning code in a summary line
LABEL_MAX_CHARS, LABEL_MAX_WORDS = 32, 4  # a short label (short_label)
LABEL_SET_SHARE, LABEL_SET_MAX = 0.9, 50  # a label set: this share labelled, 2 to MAX labels
MAX_LABELS = 1000  # distinct short answers tracked; more means it is not a label set


@dataclass
class ValidationReport:
    path: str
    format: str | None = None
    model: str | None = None
    max_seq_len: int | None = None
    n_rows: int = 0
    n_examples: int = 0  # examples without errors
    counts: Counter = field(default_factory=Counter)  # error code -> all occurrences
    warning_counts: Counter = field(default_factory=Counter)
    errors: list[Issue] = field(default_factory=list)  # at most max_per_code per code
    warnings: list[Issue] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def n_errors(self) -> int:
        return sum(self.counts.values())

    @property
    def n_warnings(self) -> int:
        return sum(self.warning_counts.values())

    def warning_lines(self) -> list[str]:
        """One line per warning code: how many, at which lines, what to do (for job events and
        the CLI)."""
        out = []
        for code, n in self.warning_counts.items():
            shown = [w for w in self.warnings if w.code == code]
            lines = [str(w.line) for w in shown if w.line is not None][:LINES_SHOWN]
            where = (f" (line{'s' if len(lines) > 1 else ''} {', '.join(lines)}"
                     + (", ..." if n > len(lines) else "") + ")") if lines else ""
            what = shown[0].message if n == 1 and shown else CODES.get(code, ("", code))[1]
            hint = ("; --dedupe drops them" if code == "duplicate_example" else "")
            out.append(f"{code} x{n}{where}: {what}{hint}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "ok": self.ok, "format": self.format, "model": self.model,
            "max_seq_len": self.max_seq_len, "rows": self.n_rows, "examples": self.n_examples,
            "error_counts": dict(self.counts), "warning_counts": dict(self.warning_counts),
            "errors": [e.to_dict() for e in self.errors],
            "warnings": [w.to_dict() for w in self.warnings], "stats": self.stats,
        }


class _Collector:
    def __init__(self, report: ValidationReport, max_per_code: int):
        self.r, self.max = report, max_per_code
        self.shown: Counter = Counter()

    def add(self, issue: Issue) -> None:
        key = (issue.severity, issue.code)
        (self.r.counts if issue.severity == "error" else self.r.warning_counts)[issue.code] += 1
        if self.shown[key] < self.max:
            self.shown[key] += 1
            (self.r.errors if issue.severity == "error" else self.r.warnings).append(issue)


def _label(ex: Example) -> str | None:
    if ex.format == "completion":
        text = ex.completion
    elif ex.format == "chat":
        last = [m for m in ex.messages if m.get("role") == "assistant"]
        text = content_text(last[-1].get("content")) if last and not last[-1].get(
            "tool_calls") else None
    else:
        return None
    return short_label(text)


def short_label(text: str | None) -> str | None:
    """``text`` stripped when it is short enough to be a class label, else None."""
    if text is None:
        return None
    t = text.strip()
    return t if 0 < len(t) <= LABEL_MAX_CHARS and len(t.split()) <= LABEL_MAX_WORDS else None


def is_label_set(n: int, n_labelled: int, n_labels: int) -> bool:
    """True when ``n`` examples are a classification set: nearly all end in a short label and
    there are a few distinct labels (label imbalance warnings, label stats, stratified splits)."""
    return bool(n) and n_labelled >= LABEL_SET_SHARE * n and 1 < n_labels <= LABEL_SET_MAX


def _specials(tok) -> list[str]:
    cached = getattr(tok, "_afinar_specials", None)
    if cached is None:
        cached = [s for s in tok.all_special_tokens if len(s) > 2]
        cached += [t for t in (tok.get_added_vocab() or {}) if len(t) > 2 and t not in cached]
        tok._afinar_specials = cached
    return cached


def _special_tokens_in(tok, ex: Example) -> list[tuple[str, str]]:
    specials = _specials(tok)
    found = []
    msgs = [*ex.messages, *([ex.chosen] if ex.chosen else []), *([ex.rejected] if ex.rejected
                                                                   else [])]
    for i, m in enumerate(msgs):
        text = content_text(m.get("content"))
        for s in specials:
            if s in text:
                found.append((f"messages[{i}].content", s))
    for name, text in (("prompt", ex.prompt), ("completion", ex.completion), ("text", ex.text)):
        for s in specials:
            if text and s in text:
                found.append((name, s))
    return found


def validate_file(path: str | Path, tokenizer=None, *, model: str | None = None,
                  max_seq_len: int | None = None, max_per_code: int = 10,
                  expected_format: str | None = None, n_epochs: int | None = None,
                  role: str = "training") -> ValidationReport:
    """Check every example of ``path``; with a tokenizer, also token statistics and lengths.

    ``role="validation"``: a validation file, which has no minimum size (OpenAI sets none)."""
    p = Path(path)
    report = ValidationReport(str(p), model=model, max_seq_len=max_seq_len)
    out = _Collector(report, max_per_code)
    fmt = expected_format
    # Per example, a few bytes in compact arrays (aligned by example): 8-byte digests of the
    # example and of its normalized text, and its line, for duplicate detection after the pass;
    # token counts and a label index.
    digests, norms, lines = array("Q"), array("Q"), array("l")
    n_tok, n_trained, n_msgs, label_ix = array("i"), array("i"), array("i"), array("i")
    label_names: dict[str, int] = {}
    over = no_system = no_user = 0
    unpaired: Counter = Counter()  # unpaired (KTO) rows by label
    no_system_lines: list[int] = []
    for item in iter_rows(p):
        if isinstance(item, Issue):
            out.add(item)
            continue
        row: Row = item
        report.n_rows += 1
        if fmt is None:
            fmt = detect(row.data)
            fmt = "chat" if fmt == "evals" else fmt
        ex, issues = parse_example(row.data, row.line, fmt)
        for i in issues:
            out.add(i)
        if ex is None:
            continue
        enc = None
        if tokenizer is not None:
            try:
                enc = encode_example(tokenizer, ex)
            except TemplateError as e:
                out.add(Issue("template_error", e.message, row.line))
                continue
        digests.append(_digest(ex.canonical()))
        norms.append(_digest(normalize(example_text(row.data)) or ex.canonical()))
        lines.append(row.line)
        report.n_examples += 1
        if ex.format == "unpaired":
            unpaired[ex.label] += 1
        if ex.format in ("chat", "preference", "unpaired", "prompt"):
            roles = {m.get("role") for m in ex.messages}
            n_msgs.append(len(ex.messages) + (1 if ex.format in ("preference", "unpaired")
                                              else 0))
            no_system += "system" not in roles
            if "system" not in roles and len(no_system_lines) < LINES_SHOWN:
                no_system_lines.append(row.line)
            no_user += "user" not in roles
        lab = _label(ex)
        if lab is not None and (lab in label_names or len(label_names) < MAX_LABELS):
            label_ix.append(label_names.setdefault(lab, len(label_names)))
        else:
            label_ix.append(-1)
        if enc is None:
            continue
        for fld, s in _special_tokens_in(tokenizer, ex):
            out.add(Issue("special_token_in_content", f"{s!r} in the text will be read as a "
                          "special token, not as text", row.line, fld, "warning"))
        pair: tuple[Encoded, ...] = enc if isinstance(enc, tuple) else (enc,)
        total = max(e.n_tokens for e in pair)
        n_tok.append(total)
        n_trained.append(pair[0].n_trained)
        if ex.format == "prompt":  # nothing is trained on: the model writes the answer
            if max_seq_len and total >= max_seq_len:
                out.add(Issue("example_too_long", f"the prompt's {total} tokens leave no room "
                              f"for an answer within max {max_seq_len}", row.line))
            continue
        if pair[0].n_trained == 0:
            out.add(Issue("no_trained_tokens", "the loss mask is empty", row.line))
        if max_seq_len and total > max_seq_len and ex.format != "text":
            over += 1
            if any(e.last_trained_index() >= max_seq_len for e in pair):
                out.add(Issue("example_too_long", f"{total} tokens > max {max_seq_len}: "
                              "truncation would cut trained tokens", row.line))
            else:
                out.add(Issue("example_over_length_untrained", f"{total} tokens > max "
                              f"{max_seq_len}; only untrained tokens would be cut", row.line,
                              severity="warning"))
    report.format = fmt
    n_dups = _duplicates(digests, norms, lines, out)
    n = report.n_examples  # duplicates are trained too (as by OpenAI) unless dropped (--dedupe)
    n_tok, n_trained, n_msgs = (np.frombuffer(a, dtype=np.int32) if len(a) else
                                np.zeros(0, np.int32) for a in (n_tok, n_trained, n_msgs))
    names = {i: lab for lab, i in label_names.items()}
    ix = np.frombuffer(label_ix, dtype=np.int32) if len(label_ix) else np.zeros(0, np.int32)
    labels = Counter(names[i] for i in ix.tolist() if i >= 0)
    n_labelled = int((ix >= 0).sum())
    minimum = MIN_EXAMPLES if role == "training" else 1
    if report.n_rows and n < minimum and not (fmt == "text" and n > 0):
        out.add(Issue("too_few_examples", f"{n} valid examples; at least {minimum} "
                      f"{'are' if minimum > 1 else 'is'} required", None))
    elif report.n_rows and n < ADVISED_EXAMPLES and fmt != "text" and role == "training":
        out.add(Issue("few_examples", f"{n} examples; {ADVISED_EXAMPLES}-100 are advised to see "
                      "clear gains", None, severity="warning"))
    if no_system and fmt in ("chat", "preference", "unpaired", "prompt"):
        shown = ", ".join(map(str, no_system_lines)) + (", ..." if no_system > LINES_SHOWN
                                                        else "")
        out.add(Issue("missing_system_message", f"{no_system} of {n} examples have no system "
                      f"message (lines {shown})", None, severity="warning"))
    _imbalance(labels, n, n_labelled, out)
    st_labels = labels if n and n_labelled >= LABEL_SET_SHARE * n else Counter()
    report.stats = _stats(n, n_msgs, n_tok, n_trained, st_labels, n_labelled, over, no_system,
                          no_user, max_seq_len, n_epochs)
    report.stats["duplicates"] = n_dups
    if fmt == "unpaired":  # desirable (true) and undesirable (false) answers
        report.stats["labels"] = {"true": unpaired[True], "false": unpaired[False]}
    return report


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _repeats(d: np.ndarray, ln: np.ndarray) -> list[tuple[int, int]]:
    """(line, first line) for each example whose digest appeared on an earlier line."""
    if len(d) < 2:
        return []
    order = np.lexsort((ln, d))  # by digest, then by line
    sd = d[order]
    dup = np.zeros(len(d), dtype=bool)
    dup[1:] = sd[1:] == sd[:-1]
    first_line = ln[order][np.maximum.accumulate(np.where(~dup, np.arange(len(d)), 0))]
    return sorted(zip(ln[order][dup].tolist(), first_line[dup].tolist()))


def _duplicates(digests: array, norms: array, lines: array, out: _Collector) -> int:
    """Warn about repeats of an earlier example: exact (the same example, weights aside) and
    near (the same text once casefolded, punctuation and whitespace removed). Returns the
    number of exact repeats."""
    def arr(a):
        return np.frombuffer(a, dtype=np.uint64) if len(a) else np.zeros(0, np.uint64)

    ln = np.asarray(lines, dtype=np.int64)
    exact = _repeats(arr(digests), ln)
    for line, first in exact:
        out.add(Issue("duplicate_example", f"same example as line {first}", line,
                      severity="warning"))
    seen = {line for line, _ in exact}
    for line, first in _repeats(arr(norms), ln):
        if line not in seen:
            out.add(Issue("near_duplicate_example", f"same text as line {first} but for case, "
                          "punctuation or spacing", line, severity="warning"))
    return len(exact)


def _imbalance(labels: Counter, n: int, n_labelled: int, out: _Collector) -> None:
    """Warn when examples end in a short label (a classification set) and the most common label
    outnumbers the rarest ``IMBALANCE_RATIO`` times or more."""
    if not is_label_set(n, n_labelled, len(labels)):
        return
    (top, c_top), (low, c_low) = labels.most_common()[0], labels.most_common()[-1]
    if c_top >= IMBALANCE_RATIO * c_low:
        out.add(Issue("label_imbalance", f"label {top!r} has {c_top} examples, {low!r} only "
                      f"{c_low}: the model may learn to favour {top!r}", None,
                      severity="warning"))


def dedupe_file(src: str | Path, dst: str | Path) -> tuple[int, list[int]]:
    """Copy ``src`` to ``dst`` without exact duplicate examples (the first occurrence is kept;
    rows that do not parse are kept as they are, for the validator to report). Returns (rows
    written, lines dropped). JSONL lines are copied byte for byte."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        from afinar.errors import InvalidRequest

        raise InvalidRequest(f"writing {dst} would overwrite the input; choose another --out",
                             param="out")
    seen: set[int] = set()
    kept: list[bytes] = []
    dropped: list[int] = []
    fmt = None
    for row in iter_rows(src):
        if isinstance(row, Issue):
            continue
        if fmt is None:
            fmt = detect(row.data)
            fmt = "chat" if fmt == "evals" else fmt
        ex, _ = parse_example(row.data, row.line, fmt)
        if ex is not None:
            d = _digest(ex.canonical())
            if d in seen:
                dropped.append(row.line)
                continue
            seen.add(d)
        kept.append(row.raw if row.raw is not None else json.dumps(
            row.data, ensure_ascii=False).encode())
    atomic_write_bytes(dst, b"".join(line + b"\n" for line in kept))
    return len(kept), dropped


def _stats(n, n_msgs, n_tok, n_trained, labels, n_labelled, over, no_system, no_user,
           max_seq_len, n_epochs=None) -> dict[str, Any]:
    st: dict[str, Any] = {"examples": n, "messages_per_example": summary(n_msgs),
                          "missing_system": no_system, "missing_user": no_user}
    if len(n_tok):
        billed = int(np.minimum(n_tok, max_seq_len).sum()) if max_seq_len else int(n_tok.sum())
        epochs, batch = choose_epochs_and_batch(n, n_epochs or "auto", "auto")
        st.update({
            "tokens_per_example": summary(n_tok),
            "trained_tokens_per_example": summary(n_trained),
            "total_tokens": int(n_tok.sum()), "total_trained_tokens": int(n_trained.sum()),
            "examples_over_max_seq_len": over,
            "default_epochs": default_epochs(n), "epochs": epochs, "auto_batch_size": batch,
            "estimated_training_tokens": billed * epochs,
        })
    if is_label_set(n, n_labelled, len(labels)):
        st["labels"] = dict(labels.most_common())
    return st
