"""Metrics and graders: ways to score one prediction against its test case, in one registry.

Each metric returns a ``Score`` (a value in [0, 1] and an optional note, e.g. "unparsable") or
``None`` when it does not apply to that case (no gold passages, a strategy that retrieved
nothing); a strategy's score on a metric is the mean over the cases it applies to, with a 95%
bootstrap confidence interval (``bootstrap_ci``). A grader (a model that judges answers) is a
metric like the others.

One file per family, each registering its metrics in ``METRICS`` where they are defined:

    text.py        exact_match, normalized_exact_match, token_f1, rouge_l, contains_all
    structured.py  label_accuracy, json_valid, json_schema_valid, json_match
    retrieval.py   retrieval_recall, citation_support
    judge.py       judge (a model grader: the graders' label_model)
    grader.py      grader (any grader of afinar.graders, OpenAI's shapes)

Third-party metrics register through the ``afinar.metrics`` entry point group (see
``afinar.registry``).
"""

from afinar.evals.metrics.base import (
    METRICS,
    Metric,
    Prediction,
    Score,
    bootstrap_ci,
    build,
    normalize,
    parse_json,
)
# importing each family registers its metrics
from afinar.evals.metrics.grader import GraderMetric
from afinar.evals.metrics.judge import JUDGE_LABELS, JUDGE_PROMPT, Judge
from afinar.evals.metrics.retrieval import CitationSupport, RetrievalRecall
from afinar.evals.metrics.structured import JsonMatch, JsonSchemaValid, JsonValid, LabelAccuracy
from afinar.evals.metrics.text import (
    ContainsAll,
    ExactMatch,
    NormalizedExactMatch,
    RougeL,
    TokenF1,
)

__all__ = [
    "JUDGE_LABELS", "JUDGE_PROMPT", "METRICS", "CitationSupport", "ContainsAll", "ExactMatch",
    "GraderMetric", "Judge", "JsonMatch", "JsonSchemaValid", "JsonValid", "LabelAccuracy",
    "Metric", "NormalizedExactMatch", "Prediction", "RetrievalRecall", "RougeL", "Score",
    "TokenF1", "bootstrap_ci", "build", "normalize", "parse_json",
]
