"""Metrics: a registry of ways to score one prediction against its test case.

Each metric returns a ``Score`` (a value in [0, 1] and an optional note, e.g. "unparsable") or
``None`` when it does not apply to that case (no gold passages, a strategy that retrieved
nothing); a strategy's score on a metric is the mean over the cases it applies to, with a 95%
bootstrap confidence interval (``bootstrap_ci``).

Lexical normalisation follows the SQuAD evaluation script (lower case, no punctuation, no
articles, single spaces); ROUGE-L is Google's ``rouge-score``.
"""

from __future__ import annotations

import difflib
import json
import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np

from afinar.errors import InvalidRequest
from afinar.evals.cases import Case

REGISTRY: dict[str, type[Metric]] = {}


@dataclass
class Score:
    value: float
    note: str | None = None  # "kind" or "kind: detail"; the table counts notes by kind


@dataclass
class Prediction:
    """What a strategy produced for one case (also what the run stores per line)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0  # retrieval + generation, wall clock
    generation_s: float = 0.0
    sources: list[dict[str, Any]] | None = None  # retrieved: {"source", "text", "chunk_id"}
    error: str | None = None
    added_tokens: int = 0  # prompt tokens beyond the case's own messages (examples, sources)
    started_at: float = 0.0  # wall clock (time.time) of the timed section: overlap is testable
    ended_at: float = 0.0


def register(cls):
    REGISTRY[cls.name] = cls
    return cls


class Metric:
    name: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, **options: Any):
        if options:
            raise InvalidRequest(f"metric {self.name} takes no options, got "
                                 f"{', '.join(sorted(options))}", param="metrics")

    def score(self, pred: Prediction, case: Case) -> Score | None:
        raise NotImplementedError


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def parse_json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return False, None


@register
class ExactMatch(Metric):
    name = "exact_match"
    description = "the answer equals the reference (surrounding whitespace ignored)"

    def score(self, pred, case):
        return Score(float(pred.text.strip() == case.reference.strip()))


@register
class NormalizedExactMatch(Metric):
    name = "normalized_exact_match"
    description = "equal after SQuAD normalisation (case, punctuation, articles, spaces)"

    def score(self, pred, case):
        return Score(float(normalize(pred.text) == normalize(case.reference)))


@register
class TokenF1(Metric):
    name = "token_f1"
    description = "SQuAD token F1 between the normalised answer and reference"

    def score(self, pred, case):
        p, r = normalize(pred.text).split(), normalize(case.reference).split()
        common = sum((Counter(p) & Counter(r)).values())
        if not p or not r:
            return Score(float(p == r))
        if common == 0:
            return Score(0.0)
        prec, rec = common / len(p), common / len(r)
        return Score(2 * prec * rec / (prec + rec))


@register
class RougeL(Metric):
    name = "rouge_l"
    description = "ROUGE-L F-measure (rouge-score, stemmed)"

    def __init__(self, **options):
        super().__init__(**options)
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def score(self, pred, case):
        return Score(self._scorer.score(case.reference, pred.text)["rougeL"].fmeasure)


@register
class LabelAccuracy(Metric):
    """The answer parsed to the nearest label: a JSON field when ``field`` is set and the answer
    parses, else the label named in the text (the earliest mention wins), else the closest label
    by spelling (``difflib``, cutoff 0.8). Nothing found: wrong, noted "unparsable"."""

    name = "label_accuracy"
    description = "accuracy over a label set; unparsable answers count as wrong"

    def __init__(self, labels: list[str] | None = None, field: str | None = None):
        if not labels or not all(isinstance(x, str) and x for x in labels):
            raise InvalidRequest("label_accuracy needs labels: a list of label strings",
                                 param="metrics.label_accuracy.labels")
        self.labels, self.field = list(labels), field

    def parse(self, text: str) -> str | None:
        if self.field:
            ok, obj = parse_json(text)
            if ok and isinstance(obj, dict) and isinstance(obj.get(self.field), str):
                text = obj[self.field]
        low = text.lower()
        hits = [(m.start(), lab) for lab in self.labels
                if (m := re.search(rf"(?<![a-z0-9]){re.escape(lab.lower())}(?![a-z0-9])", low))]
        if hits:
            return min(hits)[1]
        close = difflib.get_close_matches(low.strip(), [x.lower() for x in self.labels], 1, 0.8)
        return next((lab for lab in self.labels if lab.lower() == close[0]), None) if close \
            else None

    def score(self, pred, case):
        gold = self.parse(case.reference)
        if gold is None:
            return None  # the reference names no label: not a labelled case
        got = self.parse(pred.text)
        if got is None:
            return Score(0.0, "unparsable")
        return Score(float(got == gold), None if got == gold else f"said: {got}")


@register
class JsonValid(Metric):
    name = "json_valid"
    description = "the whole answer parses as JSON"

    def score(self, pred, case):
        return Score(float(parse_json(pred.text)[0]))


@register
class JsonSchemaValid(Metric):
    name = "json_schema_valid"
    description = "the answer parses and validates against the given JSON schema"

    def __init__(self, schema: dict | None = None):
        import jsonschema

        if not isinstance(schema, dict):
            raise InvalidRequest("json_schema_valid needs schema: a JSON schema object",
                                 param="metrics.json_schema_valid.schema")
        jsonschema.validators.validator_for(schema).check_schema(schema)
        self._validator = jsonschema.validators.validator_for(schema)(schema)

    def score(self, pred, case):
        ok, obj = parse_json(pred.text)
        if not ok:
            return Score(0.0, "not JSON")
        err = next(iter(self._validator.iter_errors(obj)), None)
        return Score(1.0) if err is None else Score(0.0, f"schema: {err.message[:120]}")


@register
class JsonMatch(Metric):
    """Both the answer and the reference parse as JSON objects and agree on ``fields`` (default:
    every field of the reference); strings compared after normalisation."""

    name = "json_match"
    description = "the answer's JSON fields equal the reference's (strings normalised)"

    def __init__(self, fields: list[str] | None = None):
        self.fields = fields

    def score(self, pred, case):
        ok_r, ref = parse_json(case.reference)
        if not ok_r or not isinstance(ref, dict):
            return None
        ok, got = parse_json(pred.text)
        if not ok or not isinstance(got, dict):
            return Score(0.0, "not a JSON object")
        wrong = [f for f in (self.fields or list(ref)) if _norm(got.get(f)) != _norm(ref.get(f))]
        return Score(0.0, "wrong: " + ", ".join(wrong)) if wrong else Score(1.0)


def _norm(v: Any) -> Any:
    return normalize(v) if isinstance(v, str) else v


@register
class ContainsAll(Metric):
    name = "contains_all"
    description = "the answer contains every required string (the case's metadata.must_contain)"

    def __init__(self, strings: list[str] | None = None):
        self.strings = strings

    def score(self, pred, case):
        need = case.metadata.get("must_contain") or self.strings
        if not need:
            return None
        text = normalize(pred.text)
        missing = [s for s in need if normalize(s) not in text]
        return Score(0.0, "missing: " + "; ".join(missing)) if missing else Score(1.0)


@register
class RetrievalRecall(Metric):
    name = "retrieval_recall"
    description = "share of the case's gold sources among the top-k retrieved (metadata.gold_sources)"

    def __init__(self, k: int | None = None):
        self.k = k

    def score(self, pred, case):
        gold = case.metadata.get("gold_sources")
        if not gold or pred.sources is None:
            return None
        got = {s["source"].rsplit("/", 1)[-1] for s in pred.sources[: self.k]}
        found = sum(g.rsplit("/", 1)[-1] in got for g in gold)
        return Score(found / len(gold), None if found == len(gold) else "gold not retrieved")


@register
class CitationSupport(Metric):
    """Share of the answer's sentences that a given source supports (``afinar.rag.answer.cite``:
    explicit [n] markers checked, unmarked sentences attributed to their best source; a source's
    heading path is not evidence, so repeating it supports nothing)."""

    name = "citation_support"
    description = "share of answer sentences supported by a retrieved source (grounded answers)"

    def score(self, pred, case):
        from afinar.rag.answer import _SENT, cite, content_words

        if not pred.sources:
            return None
        hits = [SimpleNamespace(source=s["source"], text=s["text"], chunk_id=s.get("chunk_id"),
                                heading_path=s.get("heading_path"), pages=[], start=None,
                                end=None) for s in pred.sources]
        sentences = [s for s in _SENT.split(pred.text) if content_words(s)]
        if not sentences:
            return Score(0.0, "empty answer")
        supported = {c.sentence for c in cite(pred.text, hits) if c.supported}
        n = sum(s in supported for s in sentences)
        return Score(n / len(sentences), None if n == len(sentences) else "unsupported sentence")


JUDGE_SCHEMA = {"type": "object", "properties": {
    "verdict": {"type": "string", "enum": ["correct", "incorrect"]},
    "reason": {"type": "string", "maxLength": 100}}, "required": ["verdict", "reason"],
    "additionalProperties": False}
JUDGE_PROMPT = ("You grade answers. Compare the candidate answer with the reference answer for "
                "the question. {rubric}\n\nQuestion: {question}\n\nReference answer: "
                "{reference}\n\nCandidate answer: {answer}\n\nReply with JSON: verdict "
                "(correct or incorrect) and a short reason.")


@register
class Judge(Metric):
    """A chosen model's verdict, decoded under a JSON schema so it always parses."""

    name = "judge"
    description = "a judge model's constrained-JSON verdict (correct / incorrect)"
    loader: Callable[[str], Any] | None = None  # set by the runner: model id -> LoadedModel

    def __init__(self, model: str | None = None, rubric: str = "The candidate is correct "
                 "when it states the same facts as the reference."):
        self.model, self.rubric = model, rubric

    def score(self, pred, case):
        from afinar.models.constrained import json_chat
        from afinar.models.generation import Generator, SamplingParams
        from afinar.settings import get_settings

        if self.loader is None:
            raise InvalidRequest("the judge metric needs a model loader", param="metrics")
        lm = self.loader(self.model or get_settings().default_model)
        prompt = JUDGE_PROMPT.format(rubric=self.rubric, question=case.question,
                                     reference=case.reference, answer=pred.text)
        verdict, _ = json_chat(Generator(lm), [{"role": "user", "content": prompt}], JUDGE_SCHEMA,
                               # ~130 characters at most: 200 tokens always hold the verdict
                               SamplingParams(temperature=0, max_tokens=200))
        return Score(float(verdict["verdict"] == "correct"), verdict["reason"][:120])


def build(spec: str | dict[str, Any]) -> Metric:
    """A metric from its name, or ``{"name": ..., **options}``."""
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in REGISTRY:
        raise InvalidRequest(f"unknown metric {name!r}; known: {', '.join(sorted(REGISTRY))}",
                             param="metrics")
    try:
        return REGISTRY[name](**spec)
    except TypeError as e:
        raise InvalidRequest(f"metric {name}: {e}", param="metrics") from None


def bootstrap_ci(values, n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (cases resampled with replacement)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    if a.size == 1 or np.all(a == a[0]):
        return float(a[0]) if a.size == 1 else float(a.mean()), float(a.mean())
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(n_resamples, a.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)
