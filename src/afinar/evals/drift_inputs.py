"""What the drift monitor (``afinar.evals.drift``) reads: the questions of query files, training
files and evaluation sets, the model's training data from its manifest, the request log and its
feedback, and the monitor's thresholds (``DriftConfig``, a YAML file).

Every reader checks its input before any work and raises one ``InvalidRequest`` naming the file,
the line and the field (the CLI's ``error:`` line, exit 2).

A question is the text a user asked, never the system prompt (shared by every row of a support
dataset, it would make any two rows look alike): a chat row's last user message, a completion's
``prompt``, a preference row's ``input`` messages, or a ``question`` / ``query`` / ``text`` string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from afinar.errors import InvalidRequest
from afinar.evals.cases import read_cases
from afinar.evals.config import load_config as load_eval
from afinar.models.catalog import ModelInfo
from afinar.models.finetuned import read_manifest
from afinar.models.templates import content_text
from afinar.settings import Settings
from afinar.store.feedback import Feedback, FeedbackRecord, RequestRecord
from afinar.store.files import Files
from afinar.store.schedules import parse_duration

TEXT_KEYS = ("question", "query", "text", "input", "prompt")


class DriftConfig(BaseModel):
    """The monitor's thresholds (``afinar monitor --config drift.yaml``; every key optional)."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.01, gt=0, lt=1, description="significance level of every test")
    min_effect: float = Field(0.25, ge=0, le=2, description=(
        "mean nearest-neighbour cosine distance the queries must exceed the reference's own by "
        "to count as drift: about the distance between two wordings of one question in "
        "MiniLM's space, so new wordings of known questions are not acted on, new questions "
        "are (the support example: held-out tickets +0.16, off-topic questions +0.63)"))
    permutations: int = Field(999, ge=99, le=100_000, description="permutation test resamples")
    max_reference: int = Field(500, ge=10, description="reference texts sampled at most")
    max_queries: int = Field(500, ge=10, description="queries sampled at most")
    min_queries: int = Field(5, ge=2, description="fewer queries: no test (too little to say)")
    seed: int = 0
    near_duplicate: float = Field(0.6, gt=0, le=1, description=(
        "Jaccard (word shingles, data.minhash) above which two questions are near duplicates "
        "and never each other's nearest neighbour; 1: only each question itself"))
    retrieval_drop: float = Field(0.05, ge=0, le=1, description=(
        "median fall of the top-1 cosine (recent vs baseline) that asks for a re-sync"))
    max_abstain_share: float = Field(0.2, ge=0, le=1, description=(
        "share of grounded answers saying 'not in the sources' that asks for a re-sync"))
    max_negative_rate: float = Field(0.3, ge=0, le=1, description=(
        "share of -1 ratings that asks for re-training"))
    min_ratings: int = Field(5, ge=1, description="fewer ratings: the rate is not acted on")
    embedding_model: str | None = Field(None, description="default: the embedded MiniLM")
    abstain_phrases: list[str] = Field(default_factory=list, description=(
        "more answer texts that mean 'not in the sources' (afinar's own are always counted)"))


def load_config(path: str | Path | None) -> DriftConfig:
    if path is None:
        return DriftConfig()
    path = Path(path)
    if not path.is_file():
        raise InvalidRequest(f"config file not found: {path}", param="config")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: the config is a mapping of thresholds, not "
                             f"{type(raw).__name__}", param="config")
    try:
        return DriftConfig(**raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "config"
        raise InvalidRequest(f"{path}: {where}: {err['msg']}", param=where) from None


def question_of(data: Any) -> str | None:
    """The question a row asks (see the module), or None."""
    if isinstance(data, str):
        return data.strip() or None
    if isinstance(data, list):  # a list of chat messages
        users = [m for m in data if isinstance(m, dict) and m.get("role") == "user"]
        return (content_text(users[-1].get("content")).strip() or None) if users else None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("messages"), list):
        return question_of(data["messages"])
    for key in TEXT_KEYS:
        value = data.get(key)
        if isinstance(value, (str, list)) or (isinstance(value, dict) and value.get("messages")):
            q = question_of(value)
            if q:
                return q
    return None


def read_questions(path: str | Path, what: str) -> list[str]:
    """The questions of a JSONL / JSON file (rows as above) or a text file (one a line)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidRequest(f"{what} file not found: {path}", param=what)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest(f"{path}: not UTF-8 text", param=what) from None
    out: list[str] = []
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidRequest(f"{path}: not JSON ({e.msg} at line {e.lineno})",
                                 param=what) from None
        rows = rows if isinstance(rows, list) else [rows]
        numbered = list(enumerate(rows, 1))
    elif path.suffix.lower() == ".jsonl":
        numbered = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    numbered.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise InvalidRequest(f"{path}:{n}: line: not JSON ({e.msg} at column "
                                         f"{e.colno})", param=what) from None
    else:  # text: one question a line
        numbered = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    for n, row in numbered:
        q = question_of(row)
        if q is None:
            raise InvalidRequest(f"{path}:{n}: no question (a user message, or one of "
                                 f"{', '.join(TEXT_KEYS)})", param=what)
        out.append(q)
    if not out:
        raise InvalidRequest(f"{path}: no queries in the file", param=what)
    return out


def eval_questions(path: str | Path) -> tuple[list[str], str | None, str]:
    """(the questions, the eval config's knowledge base or None, the test file) of an
    ``eval.yaml`` or a test JSONL."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        cfg = load_eval(path)
        return [c.question for c in read_cases(cfg.test_file)], cfg.knowledge_base, \
            str(cfg.test_file)
    return [c.question for c in read_cases(path)], None, str(path)


def training_file(info: ModelInfo, settings: Settings) -> tuple[Path | None, str]:
    """The training file a fine-tune was trained on (its manifest's sha256, read from the blob
    store), or (None, why not)."""
    manifest = read_manifest(info.path) if info.path.is_dir() else {}
    digest = (manifest.get("datasets") or {}).get("training_file")
    if not digest:
        return None, (f"{info.id} has no afinar manifest naming its training data (not an "
                      "afinar fine-tune): give --train FILE")
    blobs = Files(settings).blobs
    if not blobs.exists(digest):
        return None, (f"{info.id}'s training file (sha256 {digest[:12]}...) is no longer in the "
                      "blob store: give --train FILE")
    return blobs.get(digest).path, f"the manifest's training_file (sha256 {digest[:12]}...)"


def parse_since(value: str | None, now: float) -> float:
    """``--since``: a duration back from now (``7d``, ``12h``) or a date (``2026-11-01``, ISO
    date-time); default 7 days."""
    if value is None:
        return now - 7 * 86400.0
    try:
        return now - parse_duration(value, "--since")
    except InvalidRequest:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"--since {value!r} is neither a duration (7d, 12h) nor a date "
                             "(2026-11-01)", param="since") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


@dataclass
class Logged:
    """Logged requests to a model: the window's (``recent``) and those before it."""

    recent: list[RequestRecord] = field(default_factory=list)
    earlier: list[RequestRecord] = field(default_factory=list)
    ratings: dict[str, list[int]] = field(default_factory=dict)  # request id -> ratings


def logged(settings: Settings, names: set[str], since: float) -> Logged:
    store = Feedback(settings)
    store.prune()
    out = Logged()
    with store.db.session() as s:
        rows = list(s.scalars(select(RequestRecord).where(RequestRecord.model.in_(names))
                              .order_by(RequestRecord.created_at)))
        ids = [r.id for r in rows]
        for i in range(0, len(ids), 500):
            for f in s.scalars(select(FeedbackRecord).where(
                    FeedbackRecord.request_id.in_(ids[i:i + 500]),
                    FeedbackRecord.type == "rating")):
                out.ratings.setdefault(f.request_id, []).append(int(f.rating))
    for r in rows:
        (out.recent if r.created_at >= since else out.earlier).append(r)
    return out


def logged_question(rec: RequestRecord) -> str | None:
    if rec.kind == "completion":
        prompts = rec.prompt if isinstance(rec.prompt, list) else [rec.prompt]
        return question_of(prompts[0]) if prompts else None
    return question_of(rec.prompt)


def answers(rec: RequestRecord) -> list[str]:
    return [str(c.get("text") or "") for c in rec.choices or []]


def grounded(rec: RequestRecord) -> bool:
    """Whether a logged answer was grounded (the server marks file_search answers)."""
    return bool((rec.info or {}).get("grounded"))


__all__ = ["DriftConfig", "Logged", "answers", "eval_questions", "grounded", "load_config",
           "logged", "logged_question", "parse_since", "question_of", "read_questions",
           "training_file"]
