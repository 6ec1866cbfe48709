"""Validate a dataset file for training: every problem with its line, field and code, plus exact
token statistics computed with the target model's tokenizer and chat template.

Streaming: rows are read one at a time; what is kept per example is a few integers and a 16-byte
digest for duplicate detection, so memory stays bounded for files of gigabytes.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afinar.data.encode import Encoded, TemplateError, encode_example
from afinar.data.formats import Example, content_text, detect, parse_example
from afinar.data.issues import Issue
from afinar.data.reader import Row, iter_rows
from afinar.data.stats import default_epochs, summary

MIN_EXAMPLES, ADVISED_EXAMPLES = 10, 50
LABEL_MAX_CHARS, LABEL_MAX_WORDS = 32, 4
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
    if text is None:
        return None
    t = text.strip()
    return t if 0 < len(t) <= LABEL_MAX_CHARS and len(t.split()) <= LABEL_MAX_WORDS else None


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
                  expected_format: str | None = None,
                  n_epochs: int | None = None) -> ValidationReport:
    """Check every example of ``path``; with a tokenizer, also token statistics and lengths."""
    p = Path(path)
    report = ValidationReport(str(p), model=model, max_seq_len=max_seq_len)
    out = _Collector(report, max_per_code)
    fmt = expected_format
    # Per example, a few bytes in compact arrays (aligned by example): an 8-byte digest and its
    # line for duplicate detection after the pass, token counts and a label index.
    digests, lines = array("Q"), array("l")
    n_tok, n_trained, n_msgs, label_ix = array("i"), array("i"), array("i"), array("i")
    label_names: dict[str, int] = {}
    over = no_system = no_user = 0
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
        digests.append(int.from_bytes(hashlib.blake2b(ex.canonical().encode(),
                                                      digest_size=8).digest(), "little"))
        lines.append(row.line)
        report.n_examples += 1
        if ex.format in ("chat", "preference"):
            roles = {m.get("role") for m in ex.messages}
            n_msgs.append(len(ex.messages) + (1 if ex.format == "preference" else 0))
            no_system += "system" not in roles
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
    keep = _duplicates(digests, lines, out)
    report.n_examples = n = int(keep.sum())
    n_tok, n_trained = _kept(n_tok, keep), _kept(n_trained, keep)
    if len(n_msgs) == len(keep):
        n_msgs = _kept(n_msgs, keep)
    names = {i: lab for lab, i in label_names.items()}
    ix = _kept(label_ix, keep)
    labels = Counter(names[i] for i in ix.tolist() if i >= 0)
    n_labelled = int((ix >= 0).sum())
    if report.n_rows and n < MIN_EXAMPLES and not (fmt == "text" and n > 0):
        out.add(Issue("too_few_examples", f"{n} valid examples; at least {MIN_EXAMPLES} are "
                      "required", None))
    elif report.n_rows and n < ADVISED_EXAMPLES and fmt != "text":
        out.add(Issue("few_examples", f"{n} examples; {ADVISED_EXAMPLES}-100 are advised to see "
                      "clear gains", None, severity="warning"))
    if no_system and fmt in ("chat", "preference"):
        out.add(Issue("missing_system_message", f"{no_system} examples have no system message",
                      None, severity="warning"))
    report.stats = _stats(n, n_msgs, n_tok, n_trained, labels, n_labelled, over, no_system,
                          no_user, max_seq_len, n_epochs)
    return report


def _duplicates(digests: array, lines: array, out: _Collector):
    """Mark repeats of an earlier example (by 8-byte digest) and report them; returns the mask
    of examples to keep."""
    import numpy as np

    d = np.frombuffer(digests, dtype=np.uint64) if len(digests) else np.zeros(0, np.uint64)
    ln = np.asarray(lines, dtype=np.int64)
    keep = np.ones(len(d), dtype=bool)
    if len(d) < 2:
        return keep
    order = np.lexsort((ln, d))  # by digest, then by line
    sd = d[order]
    dup = np.zeros(len(d), dtype=bool)
    dup[1:] = sd[1:] == sd[:-1]
    first_line = ln[order][np.maximum.accumulate(np.where(~dup, np.arange(len(d)), 0))]
    found = sorted(zip(ln[order][dup].tolist(), first_line[dup].tolist()))
    for line, first in found:
        out.add(Issue("duplicate_example", f"same example as line {first}", line))
    keep[order[dup]] = False
    return keep


def _kept(values: array, keep):
    import numpy as np

    a = np.frombuffer(values, dtype=np.int32) if len(values) else np.zeros(0, np.int32)
    return a[keep[: len(a)]] if len(a) == len(keep) else a


def _stats(n, n_msgs, n_tok, n_trained, labels, n_labelled, over, no_system, no_user,
           max_seq_len, n_epochs=None) -> dict[str, Any]:
    st: dict[str, Any] = {"examples": n, "messages_per_example": summary(n_msgs),
                          "missing_system": no_system, "missing_user": no_user}
    if len(n_tok):
        import numpy as np

        billed = int(np.minimum(n_tok, max_seq_len).sum()) if max_seq_len else int(n_tok.sum())
        epochs = n_epochs or default_epochs(n)
        st.update({
            "tokens_per_example": summary(n_tok),
            "trained_tokens_per_example": summary(n_trained),
            "total_tokens": int(n_tok.sum()), "total_trained_tokens": int(n_trained.sum()),
            "examples_over_max_seq_len": over,
            "default_epochs": default_epochs(n), "epochs": epochs,
            "estimated_training_tokens": billed * epochs,
        })
    if n and n_labelled >= 0.9 * n and 1 < len(labels) <= 50:
        st["labels"] = dict(labels.most_common())
    return st
