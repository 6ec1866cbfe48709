"""Metrics on the answer's text: exact and normalised match, SQuAD token F1, ROUGE-L (Google's
``rouge-score``), required strings."""

from __future__ import annotations

from collections import Counter

from afinar.evals.metrics.base import METRICS, Metric, Score, normalize


@METRICS.register()
class ExactMatch(Metric):
    name = "exact_match"
    description = "the answer equals the reference (surrounding whitespace ignored)"

    def score(self, pred, case):
        return Score(float(pred.text.strip() == case.reference.strip()))


@METRICS.register()
class NormalizedExactMatch(Metric):
    name = "normalized_exact_match"
    description = "equal after SQuAD normalisation (case, punctuation, articles, spaces)"

    def score(self, pred, case):
        return Score(float(normalize(pred.text) == normalize(case.reference)))


@METRICS.register()
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


@METRICS.register()
class RougeL(Metric):
    name = "rouge_l"
    description = "ROUGE-L F-measure (rouge-score, stemmed)"

    def __init__(self, **options):
        super().__init__(**options)
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def score(self, pred, case):
        return Score(self._scorer.score(case.reference, pred.text)["rougeL"].fmeasure)


@METRICS.register()
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
