"""``text_similarity``: the rendered ``input`` against the rendered ``reference`` by one of
OpenAI's ``evaluation_metric`` values.

    fuzzy_match     rapidfuzz ``WRatio`` / 100 after its default processing (what OpenAI uses)
    bleu            NLTK sentence BLEU, uniform weights up to 4-grams (fewer for shorter texts:
                    an identical 3-word answer scores 1), method-1 smoothing
    gleu            NLTK sentence GLEU, 1- to 4-grams
    meteor          NLTK METEOR: exact and Porter-stem matches, WordNet synonyms too when NLTK's
                    wordnet data is installed (nothing is downloaded)
    rouge_1..5, rouge_l   rouge-score F-measure (its tokenizer: lower case, alphanumerics)
    cosine          cosine of the two texts' embeddings by the embedded sentence-transformers
                    model (``Settings.default_embedding_model``), in [-1, 1]

Words for BLEU/GLEU/METEOR come from NLTK's ``wordpunct_tokenize`` (a regex: no data files).
``pass_threshold`` (OpenAI's evals field) adds ``metadata["passed"]``; the score stays the
similarity.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from afinar.graders.base import GRADERS, GradeResult, Grader, Spec

Metric = Literal["cosine", "fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2",
                 "rouge_3", "rouge_4", "rouge_5", "rouge_l"]


def _words(text: str) -> list[str]:
    from nltk.tokenize import wordpunct_tokenize

    return wordpunct_tokenize(text)


def fuzzy_match(a: str, b: str) -> float:
    from rapidfuzz import fuzz, utils

    return fuzz.WRatio(a, b, processor=utils.default_process) / 100.0


def bleu(a: str, b: str) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    hyp, ref = _words(a), _words(b)
    n = min(4, len(hyp), len(ref))
    if n == 0:
        return float(hyp == ref)
    return float(sentence_bleu([ref], hyp, weights=tuple([1.0 / n] * n),
                               smoothing_function=SmoothingFunction().method1))


def gleu(a: str, b: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    hyp, ref = _words(a), _words(b)
    if not hyp or not ref:
        return float(hyp == ref)
    return float(sentence_gleu([ref], hyp, min_len=1, max_len=4))


class _NoSynonyms:
    """WordNet's place when its data is not installed: no synonym matches."""

    @staticmethod
    def synsets(_word, *a, **k):
        return []


@functools.cache
def _wordnet():
    try:
        from nltk.corpus import wordnet

        wordnet.synsets("test")
        return wordnet
    except LookupError:
        return _NoSynonyms()


def meteor(a: str, b: str) -> float:
    from nltk.translate.meteor_score import meteor_score

    hyp, ref = _words(a), _words(b)
    if not hyp or not ref:
        return float(hyp == ref)
    return float(meteor_score([ref], hyp, wordnet=_wordnet()))


@functools.cache
def _rouge(kind: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind])


def _rouge_metric(kind: str) -> Callable[[str, str], float]:
    def score(a: str, b: str) -> float:
        return float(_rouge(kind).score(b, a)[kind].fmeasure)  # (target, prediction)

    return score


_embed_lock = threading.Lock()


@functools.cache
def _embedder(model_id: str, _home: str):  # the home in the key: tests switch homes
    from afinar.models.catalog import Catalog
    from afinar.models.loader import load_embedding_model
    from afinar.settings import get_settings

    settings = get_settings()
    return load_embedding_model(Catalog(settings).get(model_id), settings)


def cosine(a: str, b: str) -> float:
    from afinar.settings import get_settings

    settings = get_settings()
    model = _embedder(settings.default_embedding_model, str(settings.home))
    with _embed_lock:
        va, vb = model.encode([a, b], normalize_embeddings=True)
    return float(min(1.0, max(-1.0, float((va * vb).sum()))))


METRICS: dict[str, Callable[[str, str], float]] = {
    "fuzzy_match": fuzzy_match, "bleu": bleu, "gleu": gleu, "meteor": meteor, "cosine": cosine,
    **{f"rouge_{n}": _rouge_metric(f"rouge{n}") for n in range(1, 6)},
    "rouge_l": _rouge_metric("rougeL"),
}


class TextSimilaritySpec(Spec):
    type: Literal["text_similarity"]
    input: str
    reference: str
    evaluation_metric: Metric
    pass_threshold: float | None = Field(None, ge=-1, le=1)


@GRADERS.register("text_similarity")
class TextSimilarity(Grader):
    type = "text_similarity"
    Spec = TextSimilaritySpec

    def __init__(self, spec, path, ctx):
        super().__init__(spec, path, ctx)
        self.input = self.template(spec.input, "input")
        self.reference = self.template(spec.reference, "reference")
        self.metric = METRICS[spec.evaluation_metric]

    @property
    def range(self):
        return (-1.0, 1.0) if self.spec.evaluation_metric == "cosine" else (0.0, 1.0)

    def score(self, sample, item):
        value = self.metric(self.input.render(sample, item), self.reference.render(sample, item))
        if self.spec.pass_threshold is None:
            return value
        return GradeResult(value, metadata={"passed": value >= self.spec.pass_threshold})
