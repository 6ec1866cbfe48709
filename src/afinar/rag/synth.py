"""Grounded synthetic data from a knowledge base (``afinar data synth``): a chat model reads each
chunk and writes one question it answers and the answer, as constrained JSON
(``models.constrained.json_chat``); each answer is checked against its chunk with the support
check of grounded answers (``rag.answer.support``: every sentence's content words found in the
chunk's body, the heading path excluded) and, when given, a judge; unsupported ones are dropped.

Two styles:

- ``qa``: the question, then the answer (``--as-eval`` writes these with ``gold_sources``
  metadata, an evaluation test set in ``evals.cases`` format);
- ``raft`` (RAFT, Zhang et al. 2024): the question with sources in the prompt, laid out by
  ``rag.layouts.with_sources``, the one function the evaluation's ``rag`` and
  ``fine_tuned_rag`` strategies lay their prompts out with: the gold chunk at a random place
  among distractors that the base's own search returns for the question; a share of the
  examples (``absent_share``) show only distractors and answer ``NOT_IN_SOURCES``, so the tuned
  model learns to say the sources do not hold an answer rather than guess.

A judge (``grader_judge``: any ``afinar.graders`` grader, given the answer as its sample and
``{question, passage}`` as its item) may also have to pass each answer (``judge_min``).

Questions found in a test file are dropped (``data.leak.check_leak``: exact, normalized and near
duplicates), and so are repeats among the generated ones (``data.keys.normalize``, then
``data.minhash.near_duplicates``). The file is checked with ``data.validate.validate_file``
(the generator's tokenizer) before it is written, atomically; nothing is written when it fails.
``SynthReport`` says how many were generated, kept, and dropped for which reason (they add up).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from afinar.data.keys import normalize
from afinar.data.leak import check_leak
from afinar.data.minhash import near_duplicates
from afinar.data.reader import iter_rows
from afinar.data.validate import validate_file
from afinar.errors import AfinarError, ContextLengthExceeded, InvalidRequest
from afinar.models.constrained import JsonIncomplete, json_chat
from afinar.models.generation import Generator, SamplingParams
from afinar.models.templates import content_text
from afinar.rag.answer import _SENT, SUPPORT, chunk_body, content_words, support
from afinar.rag.kb import KnowledgeBases
from afinar.rag.layouts import with_sources
from afinar.store.atomic import atomic_write_text
from afinar.store.tables import KbChunk, KbDocument

STYLES = ("qa", "raft")
NOT_IN_SOURCES = "I do not know: the sources do not hold the answer to this question."
MIN_CHUNK_WORDS = 8  # chunks with fewer content words (a heading, a caption) are not asked about
GENERATOR_SYSTEM = (
    "You write training data from a passage of documentation. Write one question that a user "
    "could ask and that the passage answers, and the answer to it, using only facts stated in "
    "the passage. The question must make sense without the passage (name the product or topic "
    "it is about). The answer is one or two sentences.")
# Why an example was dropped, in the order the checks run (the report lists them so).
REASONS = {
    "too_long": "the chunk and instructions do not fit the model's context",
    "incomplete_json": "the reply was cut before its JSON was complete",
    "error": "generation failed",
    "empty": "an empty question or answer",
    "unsupported": "a sentence of the answer is not supported by its chunk",
    "judge": "the judge scored it under the minimum",
    "no_distractors": "raft: no other chunk to show beside (or instead of) the gold one",
    "leak": "the question is in the test file (exact, normalized or near)",
    "duplicate": "the same, or nearly the same, question as an earlier one",
}
Judge = Callable[[str, str, str], float]  # (question, answer, chunk text) -> score in [0, 1]


@dataclass
class Chunk:
    chunk_id: int  # the chunk's rowid (``Hit.chunk_id``)
    source: str
    text: str
    heading_path: list[str]


@dataclass
class SynthExample:
    question: str
    answer: str  # what the assistant says (``NOT_IN_SOURCES`` for an absent example)
    source: str  # the gold chunk's document
    chunk_id: int
    support: float  # of the generated answer by the gold chunk
    kind: str  # qa | gold (raft, the gold chunk shown) | absent (raft, only distractors)
    messages: list[dict[str, Any]]  # the conversation written, the answer last
    sources: list[tuple[str, str]] = field(default_factory=list)  # the prompt's (raft)
    source_chunks: list[int] = field(default_factory=list)
    judge_score: float | None = None

    def row(self) -> dict[str, Any]:
        return {"messages": self.messages}

    def eval_row(self) -> dict[str, Any]:
        """An ``evals.cases`` test case: the question, the reference answer, the gold source."""
        return {"messages": self.messages, "metadata": {
            "gold_sources": [self.source.rsplit("/", 1)[-1]], "chunk_id": self.chunk_id}}


@dataclass
class SynthReport:
    kb: str
    model: str
    style: str
    out: str
    chunks: int = 0  # chunks asked about
    chunks_skipped: int = 0  # too short to ask about
    generated: int = 0
    kept: list[SynthExample] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    written: bool = False
    not_written: str | None = None  # why not
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def kinds(self) -> Counter:
        return Counter(e.kind for e in self.kept)

    def to_dict(self) -> dict[str, Any]:
        return {"kb": self.kb, "model": self.model, "style": self.style, "out": self.out,
                "chunks": self.chunks, "chunks_skipped": self.chunks_skipped,
                "generated": self.generated, "kept": len(self.kept), "kinds": dict(self.kinds),
                "dropped": {r: self.dropped[r] for r in REASONS if self.dropped[r]},
                "written": self.written, "not_written": self.not_written,
                "validation": self.validation}


def grader_judge(spec: dict[str, Any] | str | Path) -> Judge:
    """A judge from a grader (``afinar.graders``: a spec, or a YAML/JSON file holding one),
    loaded (and its spec checked) now. It grades the answer as the sample
    (``{{ sample.output_text }}``) with the item ``{"question": ..., "passage": the chunk}``."""
    from afinar.graders import load_grader, sample_from_text

    grader = load_grader(spec)

    def judge(question: str, answer: str, chunk: str) -> float:
        item = {"question": question, "passage": chunk}
        return float(grader.grade(sample_from_text(answer), item).score)

    return judge


def answer_support(answer: str, chunk_text: str, heading_path: list[str] | None = None) -> float:
    """How well ``chunk_text`` supports ``answer``: the lowest support (``rag.answer.support``)
    of its sentences that hold content words; 0 for an answer with none. An answer is supported
    when this reaches ``rag.answer.SUPPORT``, as a grounded answer's cited sentence is."""
    scores = [support(s, chunk_text, heading_path) for s in _SENT.split(answer)
              if content_words(s)]
    return min(scores) if scores else 0.0


def question_schema(max_question_chars: int, max_answer_chars: int) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": ["question", "answer"],
            "properties": {
                "question": {"type": "string", "minLength": 1, "maxLength": max_question_chars},
                "answer": {"type": "string", "minLength": 1, "maxLength": max_answer_chars}}}


def chunk_pool(kbs: KnowledgeBases, kb: str) -> tuple[list[Chunk], int]:
    """The base's chunks worth a question (in rowid order) and how many were too short."""
    rec = kbs.get(kb)
    with kbs.db.session() as s:
        rows = list(s.execute(
            select(KbChunk.rowid, KbDocument.source, KbChunk.text, KbChunk.heading_path)
            .join(KbDocument, KbDocument.id == KbChunk.doc_id)
            .where(KbChunk.kb_id == rec.id).order_by(KbChunk.rowid)))
    pool = [Chunk(int(r), src, text, list(hp or [])) for r, src, text, hp in rows]
    kept = [c for c in pool if len(content_words(chunk_body(c.text, c.heading_path)))
            >= MIN_CHUNK_WORDS]
    return kept, len(pool) - len(kept)


def questions_of(path: Path) -> list[str]:
    """The question of every example of a test file: a chat row's last user message, a
    completion row's prompt, a preference row's last user input."""
    out = []
    for row in iter_rows(path):
        data = getattr(row, "data", None)
        if not isinstance(data, dict):
            continue
        msgs = data.get("messages")
        if not isinstance(msgs, list) and isinstance(data.get("input"), dict):
            msgs = data["input"].get("messages")
        if isinstance(msgs, list):
            users = [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
            q = content_text(users[-1].get("content")) if users else ""
        else:
            q = data.get("prompt") if isinstance(data.get("prompt"), str) else ""
        if q.strip():
            out.append(q)
    return out


def _question_file(questions: list[str], folder: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=".jsonl", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for q in questions:
            f.write(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n")
    return Path(name)


def leaked(questions: list[str], test_file: Path, threshold: float) -> set[int]:
    """Indexes of ``questions`` that the test file holds (``check_leak``: exact, normalized or
    near), each question matched against its most similar test question."""
    theirs = questions_of(test_file)
    if not theirs or not questions:
        return set()
    with tempfile.TemporaryDirectory(prefix="afinar-synth-") as tmp:
        report = check_leak(_question_file(theirs, tmp), _question_file(questions, tmp),
                            threshold)
    return {p.other_line - 1 for p in report.pairs}


def duplicates(questions: list[str], threshold: float) -> set[int]:
    """Indexes of questions that repeat an earlier one: the same once normalized
    (``data.keys.normalize``), or a near duplicate (``data.minhash.near_duplicates``)."""
    seen: set[str] = set()
    dup: set[int] = set()
    for i, q in enumerate(questions):
        key = normalize(q)
        if key in seen:
            dup.add(i)
        seen.add(key)
    rest = [i for i in range(len(questions)) if i not in dup]
    for j, _, _ in near_duplicates([questions[i] for i in rest], threshold):
        dup.add(rest[j])
    return dup


class Synthesizer:
    """One run of ``afinar data synth`` (``run``); every option is checked when it is built,
    before any model runs (``lm`` may be set after: the CLI loads it once the options pass)."""

    def __init__(self, kb: str, lm, out: str | Path, *, n: int = 500, style: str = "qa",
                 test_file: str | Path | None = None, as_eval: bool = False,
                 judge: Judge | dict | str | Path | None = None, judge_min: float = 0.5, seed: int = 0, k: int = 3,
                 absent_share: float = 0.2, system: str | None = None,
                 min_support: float = SUPPORT, near_threshold: float = 0.8,
                 max_question_chars: int = 200, max_answer_chars: int = 400,
                 temperature: float = 0.7, kbs: KnowledgeBases | None = None):
        if style not in STYLES:
            raise InvalidRequest(f"style must be one of {', '.join(STYLES)}, not {style!r}",
                                 param="style")
        if not 1 <= n <= 100_000:
            raise InvalidRequest("n must be 1..100000", param="n")
        if not 1 <= k <= 32 or (style == "raft" and k < 2):
            raise InvalidRequest("k (sources in a raft prompt) must be 2..32", param="k")
        if not 0 <= absent_share < 1:
            raise InvalidRequest("absent_share must be in [0, 1)", param="absent_share")
        for name, v in (("min_support", min_support), ("judge_min", judge_min)):
            if not 0 <= v <= 1:
                raise InvalidRequest(f"{name} must be in [0, 1]", param=name)
        if not 0.5 <= near_threshold <= 1:
            raise InvalidRequest("near_threshold must be in [0.5, 1]", param="near_threshold")
        if as_eval and style != "qa":
            raise InvalidRequest("--as-eval writes questions with their gold sources for an "
                                 "evaluation (which retrieves its own); use --style qa",
                                 param="as_eval")
        for name, v in (("max_question_chars", max_question_chars),
                        ("max_answer_chars", max_answer_chars)):
            if not 8 <= v <= 4000:
                raise InvalidRequest(f"{name} must be 8..4000", param=name)
        self.out = Path(out)
        if test_file is not None:
            test_file = Path(test_file)
            if not test_file.is_file():
                raise InvalidRequest(f"test file not found: {test_file}", param="test")
            if test_file.resolve() == self.out.resolve():
                raise InvalidRequest(f"writing {self.out} would overwrite the test file; "
                                     "choose another --out", param="out")
        if self.out.is_dir():
            raise InvalidRequest(f"{self.out} is a folder; --out names the file to write",
                                 param="out")
        if judge is not None and not callable(judge):
            judge = grader_judge(judge)  # a grader spec or file: checked now
        self.kbs = kbs or KnowledgeBases()
        self.kb = self.kbs.get(kb).name  # an unknown base fails here
        self.lm, self.n, self.style, self.test_file, self.as_eval = lm, n, style, test_file, \
            as_eval
        self.judge, self.judge_min, self.seed, self.k = judge, judge_min, seed, k
        self.absent_share, self.system, self.min_support = absent_share, system, min_support
        self.near_threshold, self.temperature = near_threshold, temperature
        self.schema = question_schema(max_question_chars, max_answer_chars)
        self.max_tokens = max_question_chars + max_answer_chars + 40  # a token is >= 1 char
        self.rng = random.Random(f"afinar-synth:{seed}")

    # -- one candidate ----------------------------------------------------------------------
    def prompt(self, chunk: Chunk) -> list[dict[str, Any]]:
        name = chunk.source.rsplit("/", 1)[-1]
        return [{"role": "system", "content": GENERATOR_SYSTEM},
                {"role": "user", "content": f'Passage from {name}:\n"""\n{chunk.text.strip()}\n'
                                            '"""\n\nWrite the question and its answer.'}]

    def generate(self, chunk: Chunk, i: int) -> tuple[str, str] | str:
        """(question, answer), or the reason it failed (a key of ``REASONS``)."""
        params = SamplingParams(temperature=self.temperature, top_p=0.95,
                                max_tokens=self.max_tokens, seed=self.seed * 100_003 + i)
        try:
            value, _ = json_chat(Generator(self.lm), self.prompt(chunk), self.schema, params)
        except ContextLengthExceeded:
            return "too_long"
        except JsonIncomplete:
            return "incomplete_json"
        except AfinarError:
            return "error"
        q, a = (str(value.get(key) or "").strip() for key in ("question", "answer"))
        return (q, a) if q and a else "empty"

    def base_messages(self, question: str) -> list[dict[str, Any]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": question}]

    def raft(self, question: str, answer: str, gold: Chunk
             ) -> tuple[str, list[tuple[str, str]], list[int]] | None:
        """(answer, sources, their chunk ids) of a raft example: the gold chunk among k - 1
        distractors, or (``absent_share`` of the time) k distractors none of which supports the
        answer and ``NOT_IN_SOURCES``; None when the base has no distractor to show."""
        absent = self.rng.random() < self.absent_share
        hits = self.kbs.search(self.kb, question, k=min(100, self.k + 10), groups=None)
        others = [h for h in hits if h.chunk_id != gold.chunk_id]
        if absent:  # a distractor that holds the answer would make it answerable after all
            others = [h for h in others if answer_support(answer, h.text, h.heading_path)
                      < SUPPORT]
        picked = others[: self.k if absent else self.k - 1]
        if not picked:
            return None
        sources = [(h.source, h.text) for h in picked]
        ids = [h.chunk_id for h in picked]
        if absent:
            return NOT_IN_SOURCES, sources, ids
        at = self.rng.randrange(len(picked) + 1)
        sources.insert(at, (gold.source, gold.text))
        ids.insert(at, gold.chunk_id)
        return answer, sources, ids

    def candidate(self, chunk: Chunk, i: int) -> SynthExample | str:
        got = self.generate(chunk, i)
        if isinstance(got, str):
            return got
        q, a = got
        sup = answer_support(a, chunk.text, chunk.heading_path)
        if sup < self.min_support or (self.min_support > 0 and not content_words(a)):
            return "unsupported"
        score = None
        if self.judge is not None:
            score = float(self.judge(q, a, chunk.text))
            if score < self.judge_min:
                return "judge"
        msgs = self.base_messages(q)
        if self.style == "qa":
            return SynthExample(q, a, chunk.source, chunk.chunk_id, sup, "qa",
                                msgs + [{"role": "assistant", "content": a}],
                                judge_score=score)
        got_raft = self.raft(q, a, chunk)
        if got_raft is None:
            return "no_distractors"
        said, sources, ids = got_raft
        msgs = with_sources(msgs, sources) + [{"role": "assistant", "content": said}]
        return SynthExample(q, said, chunk.source, chunk.chunk_id, sup,
                            "absent" if said == NOT_IN_SOURCES else "gold", msgs, sources, ids,
                            score)

    # -- the run ------------------------------------------------------------------------------
    def run(self, progress: Callable[[int, int, int], None] | None = None) -> SynthReport:
        """Generate ``n`` candidates (chunks in a seeded order, cycled when ``n`` exceeds them),
        filter, check, write. ``progress(done, total, kept so far)``."""
        report = SynthReport(self.kb, self.lm.info.id, self.style, str(self.out))
        pool, report.chunks_skipped = chunk_pool(self.kbs, self.kb)
        if not pool:
            raise InvalidRequest(f"knowledge base {self.kb} has no chunk of {MIN_CHUNK_WORDS} "
                                 "content words or more to ask about", param="kb")
        self.rng.shuffle(pool)
        report.chunks = min(len(pool), self.n)
        found: list[SynthExample] = []
        for i in range(self.n):
            got = self.candidate(pool[i % len(pool)], i)
            report.generated += 1
            if isinstance(got, str):
                report.dropped[got] += 1
            else:
                found.append(got)
            if progress:
                progress(i + 1, self.n, len(found))
        questions = [e.question for e in found]
        leak = leaked(questions, self.test_file, self.near_threshold) if self.test_file else set()
        rest = [i for i in range(len(found)) if i not in leak]
        dup = {rest[j] for j in duplicates([questions[i] for i in rest], self.near_threshold)}
        report.dropped["leak"] += len(leak)
        report.dropped["duplicate"] += len(dup)
        report.kept = [e for i, e in enumerate(found) if i not in leak and i not in dup]
        self.write(report)
        return report

    def write(self, report: SynthReport) -> None:
        """Validate the kept examples as the file they become, then write it atomically."""
        if not report.kept:
            report.not_written = "no example was kept"
            return
        rows = [e.eval_row() if self.as_eval else e.row() for e in report.kept]
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        folder = self.out.parent if self.out.parent.is_dir() else None
        with tempfile.TemporaryDirectory(prefix="afinar-synth-", dir=folder) as tmp:
            probe = Path(tmp) / self.out.name
            probe.write_text(text, encoding="utf-8")
            v = validate_file(probe, self.lm.tokenizer, model=self.lm.info.id,
                              max_seq_len=self.lm.context_length,
                              role="validation" if self.as_eval else "training")
        report.validation = {"ok": v.ok, "errors": [str(e) for e in v.errors[:5]],
                             "error_count": v.n_errors, "warnings": v.warning_lines(),
                             "stats": v.stats}
        if not v.ok:
            report.not_written = (f"the file would not validate ({v.n_errors} errors): "
                                  + "; ".join(str(e) for e in v.errors[:3]))
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out, text)
        report.written = True


def synthesize(kb: str, lm, out: str | Path, *, progress=None, **options: Any) -> SynthReport:
    """``Synthesizer(kb, lm, out, **options).run(progress)``."""
    return Synthesizer(kb, lm, out, **options).run(progress)


__all__ = ["NOT_IN_SOURCES", "REASONS", "STYLES", "SynthExample", "SynthReport", "Synthesizer",
           "answer_support", "duplicates", "grader_judge", "leaked", "synthesize"]
