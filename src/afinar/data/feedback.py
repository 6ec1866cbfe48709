"""Datasets from feedback on served answers (``afinar feedback export --as dpo|kto|sft``).

What each export is made of (the feedback lives in ``afinar.store.feedback``):

- ``dpo``: OpenAI's preference format, ``{"input": {"messages": prompt}, "preferred_output":
  [answer], "non_preferred_output": [answer]}``: a preferred choice over each other choice of
  the same request (``preference``), a correction over the answer it corrects (``correction``),
  and, for one prompt asked more than once, every +1-rated answer over every -1-rated one
  (``rating``; a rating with no opposite one for its prompt is dropped).
- ``kto``: unpaired thumbs, one row per rated answer, ``{"messages": prompt, "completion":
  answer, "label": true|false}`` (+1: true). afinar's validator has no KTO format, so each row
  is checked here (``check_kto_row``) and validated as the chat example ``prompt + answer``.
  Ratings that disagree on the same answer are dropped.
- ``sft``: chat examples, the prompt followed by the corrected answer (``correction``).

Only chat completions and responses have chat prompts: text completions are dropped, as are
answers that are tool calls or empty. Examples are deduplicated (exact and normalized duplicates,
``afinar.data.keys``), each example checked with the validator's per-example rules
(``parse_example``: a failing one is dropped with its code), split with ``split_file`` when asked
(duplicates and same-prompt rows stay on one side), and every file is validated with
``validate_file`` (as an upload is: a training file needs 10 examples) before anything is
written; then each is written atomically. The summary counts the feedback used and dropped (with
the reason) and the examples written.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from afinar.data.formats import parse_example
from afinar.data.keys import example_text, group_key
from afinar.data.pii import Redactor
from afinar.data.split import split_file
from afinar.data.validate import ValidationReport, validate_file
from afinar.errors import InvalidRequest
from afinar.store.access import Caller
from afinar.store.atomic import atomic_write_bytes
from afinar.store.feedback import Feedback, FeedbackRecord, RequestRecord

EXPORTS = ("dpo", "kto", "sft")
USES = {"dpo": "ratings, corrections and preferences", "kto": "ratings",
        "sft": "corrections"}
NOT_CHAT = "text completion (no chat prompt)"
TOOL_CALL = "the answer is a tool call"
EMPTY = "the answer is empty"
UNPAIRED = "no opposite rating for the same prompt"
SAME = "preferred and rejected answers are identical"
CONFLICT = "conflicting ratings for the same answer"
ERRORS_SHOWN = 5


def add_feedback(store: Feedback, who: Caller, request_id: str, type: str, *,
                 rating: int | None = None, reason: str | None = None,
                 correction: str | None = None, choice_index: int | None = None,
                 preferred_index: int | None = None) -> FeedbackRecord:
    """``Feedback.add`` with the free text (reason, correction) PII-redacted first, as the
    logged request was."""
    red = Redactor()
    return store.add(who, request_id, type, rating=rating,
                     reason=red.redact_text(reason) if reason else reason,
                     correction=red.redact_text(correction) if correction else correction,
                     choice_index=choice_index, preferred_index=preferred_index)


@dataclass
class ExportSummary:
    kind: str
    feedback: int = 0  # feedback items read
    used: int = 0  # items in at least one written example
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> items
    examples: int = 0  # examples built, before deduplication
    duplicates: int = 0  # examples dropped as duplicates of another
    invalid: dict[str, int] = field(default_factory=dict)  # validator code -> examples
    written: dict[str, int] = field(default_factory=dict)  # split -> examples
    paths: dict[str, str] = field(default_factory=dict)  # split -> file
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Row:
    data: dict[str, Any]
    feedback: set[str]


class _Builder:
    def __init__(self, kind: str):
        self.kind = kind
        self.rows: list[_Row] = []
        self.reasons: dict[str, str] = {}  # feedback id -> why it gave no example

    def drop(self, fb: FeedbackRecord, reason: str) -> None:
        self.reasons.setdefault(fb.id, reason)

    def answer(self, fb: FeedbackRecord, req: RequestRecord, i: int) -> str | None:
        c = req.choices[i] if 0 <= i < len(req.choices) else None
        if c is None:
            self.drop(fb, "the choice is not in the request")
        elif c.get("tool_calls"):
            self.drop(fb, TOOL_CALL)
        elif not (c.get("text") or "").strip():
            self.drop(fb, EMPTY)
        else:
            return c["text"]
        return None


def _msg(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _pair(prompt: list, good: str, bad: str) -> dict[str, Any]:
    return {"input": {"messages": prompt}, "preferred_output": _msg(good),
            "non_preferred_output": _msg(bad)}


def _dpo(b: _Builder, items: list[tuple[FeedbackRecord, RequestRecord]]) -> None:
    rated: dict[str, dict[int, dict[str, set[str]]]] = {}  # prompt -> sign -> answer -> fb ids
    prompts: dict[str, list] = {}
    for fb, req in items:
        if fb.type == "rating":
            if (text := b.answer(fb, req, fb.choice_index)) is not None:
                key = json.dumps(req.prompt, sort_keys=True, ensure_ascii=False)
                prompts[key] = req.prompt
                rated.setdefault(key, {1: {}, -1: {}})[fb.rating].setdefault(
                    text, set()).add(fb.id)
            continue
        if fb.type == "correction":
            if (bad := b.answer(fb, req, fb.choice_index)) is None:
                continue
            if bad.strip() == fb.correction.strip():
                b.drop(fb, SAME)
            else:
                b.rows.append(_Row(_pair(req.prompt, fb.correction, bad), {fb.id}))
            continue
        if (good := b.answer(fb, req, fb.preferred_index)) is None:
            continue
        group = req.choices[fb.preferred_index].get("prompt_index", 0)
        made = 0
        for c in req.choices:
            if c["index"] == fb.preferred_index or c.get("prompt_index", 0) != group:
                continue
            bad = c.get("text") or ""
            if c.get("tool_calls") or not bad.strip() or bad.strip() == good.strip():
                continue
            b.rows.append(_Row(_pair(req.prompt, good, bad), {fb.id}))
            made += 1
        if not made:
            b.drop(fb, SAME)
    for key, signs in rated.items():
        for good, up in signs[1].items():
            for bad, down in signs[-1].items():
                if good.strip() != bad.strip():
                    b.rows.append(_Row(_pair(prompts[key], good, bad), up | down))
        for ids in [*signs[1].values(), *signs[-1].values()]:
            for fid in ids:
                b.reasons.setdefault(fid, UNPAIRED)  # cleared below when a row holds it


def _kto(b: _Builder, items: list[tuple[FeedbackRecord, RequestRecord]]) -> None:
    seen: dict[tuple[str, str], list[tuple[FeedbackRecord, bool]]] = {}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for fb, req in items:
        if fb.type != "rating":
            b.drop(fb, f"a {fb.type}, not a rating (kto uses ratings)")
            continue
        if (text := b.answer(fb, req, fb.choice_index)) is None:
            continue
        key = (json.dumps(req.prompt, sort_keys=True, ensure_ascii=False), text.strip())
        seen.setdefault(key, []).append((fb, fb.rating > 0))
        rows.setdefault(key, {"messages": req.prompt, "completion": text})
    for key, votes in seen.items():
        labels = {label for _, label in votes}
        if len(labels) > 1:
            for fb, _ in votes:
                b.drop(fb, CONFLICT)
            continue
        b.rows.append(_Row({**rows[key], "label": labels.pop()}, {fb.id for fb, _ in votes}))


def _sft(b: _Builder, items: list[tuple[FeedbackRecord, RequestRecord]]) -> None:
    for fb, req in items:
        if fb.type != "correction":
            b.drop(fb, f"a {fb.type}, not a correction (sft uses corrections)")
            continue
        b.rows.append(_Row({"messages": [*req.prompt, *_msg(fb.correction)]}, {fb.id}))


def check_kto_row(data: Any) -> str | None:
    """What is wrong with a KTO row's own fields (None: nothing); its messages and completion
    are then checked as the chat example ``kto_as_chat(data)``."""
    if not isinstance(data, dict):
        return "a KTO row must be a JSON object"
    if set(data) != {"messages", "completion", "label"}:
        return "a KTO row has exactly messages, completion and label"
    if not isinstance(data["label"], bool):
        return "label must be true or false"
    if not isinstance(data["completion"], str) or not data["completion"].strip():
        return "completion must be a non-empty string"
    if not isinstance(data["messages"], list) or not data["messages"]:
        return "messages must be a non-empty list"
    return None


def kto_as_chat(data: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [*data["messages"], *_msg(data["completion"])]}


def _checked(kind: str, data: dict[str, Any]) -> str | None:
    """The first error code of one example by the validator's rules (None: valid)."""
    if kind == "kto":
        if check_kto_row(data) is not None:
            return "kto_row"
        data = kto_as_chat(data)
    _, issues = parse_example(data, 1, "preference" if kind == "dpo" else "chat")
    return next((i.code for i in issues if i.severity == "error"), None)


def _key(kind: str, data: dict[str, Any]) -> tuple:
    as_chat = kto_as_chat(data) if kind == "kto" else data
    return group_key(as_chat, example_text(as_chat))


def build(kind: str, items: list[tuple[FeedbackRecord, RequestRecord]]
          ) -> tuple[list[dict[str, Any]], ExportSummary]:
    """The examples of an export (deduplicated and checked) and what was used and dropped."""
    if kind not in EXPORTS:
        raise InvalidRequest(f"export must be one of {', '.join(EXPORTS)}, not {kind!r}",
                             param="as")
    items = sorted(items, key=lambda x: (x[0].created_at, x[0].seq))  # oldest first
    b, summary = _Builder(kind), ExportSummary(kind, feedback=len(items))
    chat = []
    for fb, req in items:
        if req.kind == "completion" or not isinstance(req.prompt, list):
            b.drop(fb, NOT_CHAT)
        else:
            chat.append((fb, req))
    {"dpo": _dpo, "kto": _kto, "sft": _sft}[kind](b, chat)
    summary.examples = len(b.rows)
    kept: dict[tuple, _Row] = {}
    invalid: Counter = Counter()
    bad: dict[str, str] = {}
    for row in b.rows:
        if (code := _checked(kind, row.data)) is not None:
            invalid[code] += 1
            for fid in row.feedback:
                bad.setdefault(fid, f"invalid example ({code})")
            continue
        key = _key(kind, row.data)
        if key in kept:
            summary.duplicates += 1
            kept[key].feedback |= row.feedback
        else:
            kept[key] = row
    used = set().union(*(r.feedback for r in kept.values())) if kept else set()
    dropped: Counter = Counter()
    for fb, _ in items:
        if fb.id not in used:
            dropped[bad.get(fb.id) or b.reasons.get(fb.id) or "no example"] += 1
    summary.used, summary.invalid = len(used), dict(invalid)
    summary.dropped = dict(dropped.most_common())
    return [r.data for r in kept.values()], summary


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def _validate(kind: str, path: Path, role: str) -> ValidationReport:
    if kind != "kto":
        return validate_file(path, expected_format="preference" if kind == "dpo" else "chat",
                             role=role)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for n, row in enumerate(rows, 1):
        if (why := check_kto_row(row)) is not None:
            raise InvalidRequest(f"{path.name}: line {n}: {why}")
    as_chat = path.with_suffix(".as-chat.jsonl")
    as_chat.write_bytes(_jsonl([kto_as_chat(r) for r in rows]))
    report = validate_file(as_chat, expected_format="chat", role=role)
    labels = Counter(r["label"] for r in rows)
    report.stats["labels"] = {"true": labels[True], "false": labels[False]}
    return report


def _targets(kind: str, out: Path | None, split: float) -> dict[str, Path]:
    out = out or Path(f"feedback-{kind}.jsonl")
    if split <= 0:
        return {"train": out}
    stem = out.name[:-len(".jsonl")] if out.name.endswith(".jsonl") else out.stem
    return {"train": out.with_name(f"{stem}.train.jsonl"),
            "val": out.with_name(f"{stem}.val.jsonl")}


def export(kind: str, items: list[tuple[FeedbackRecord, RequestRecord]], out: Path | None = None,
           split: float = 0.0, seed: int = 0) -> ExportSummary:
    """Build, split (``split``: the validation fraction; 0: one file), validate and write an
    export. Nothing is written unless every file passes the validator (``InvalidRequest``
    quotes its first errors)."""
    if not 0 <= split < 1:
        raise InvalidRequest(f"split must be a fraction in [0, 1), not {split}", param="split")
    rows, summary = build(kind, items)
    if not rows:
        raise InvalidRequest(f"no {kind} example could be built from {summary.feedback} "
                             f"feedback items ({kind} uses {USES[kind]}); dropped: "
                             + (", ".join(f"{r} x{n}" for r, n in summary.dropped.items())
                                or "nothing to export"), param="as")
    targets = _targets(kind, out, split)
    with tempfile.TemporaryDirectory(prefix="afinar-feedback-") as tmp:
        whole = Path(tmp) / "all.jsonl"
        whole.write_bytes(_jsonl(rows))
        if split > 0:
            s = split_file(whole, Path(tmp) / "split", val=split, test=0.0, seed=seed)
            parts = {name: Path(p) for name, p in s.paths.items()}
            summary.warnings += s.warnings
        else:
            parts = {"train": whole}
        for name, path in parts.items():
            report = _validate(kind, path, "training" if name == "train" else "validation")
            if not report.ok:
                shown = "; ".join(str(e) for e in report.errors[:ERRORS_SHOWN])
                raise InvalidRequest(
                    f"the {kind} export ({name}: {report.n_rows} examples) does not pass "
                    f"validation, nothing was written: {shown}", param="as")
            summary.warnings += report.warning_lines()
            summary.written[name] = report.n_rows
        for name, path in parts.items():
            targets[name].parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(targets[name], path.read_bytes())
            summary.paths[name] = str(targets[name])
    return summary
