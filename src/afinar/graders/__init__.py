"""Graders: OpenAI's grader shapes in one registry, used by evaluation metrics
(``evals/metrics/grader.py``), reward functions (GRPO) and promotion gates.

    from afinar.graders import load_grader, Grader, GradeResult, GRADERS, sample_from_text
    g = load_grader({"type": "string_check", "name": "exact", "operation": "eq",
                     "input": "{{ sample.output_text }}", "reference": "{{ item.label }}"})
    r = g.grade(sample_from_text("blue"), {"label": "blue"})   # GradeResult(score=1.0, ...)
    rs = g.grade_many(samples, items)

One file per type, each registering itself in ``GRADERS`` (``Registry("grader",
"afinar.graders", param="type")``; plugins through that entry-point group):

    string_check.py     eq / ne / like / ilike
    text_similarity.py  fuzzy_match, bleu, gleu, meteor, rouge_1..5, rouge_l, cosine
    python.py           the user's grade(sample, item) in a separate, limited process
    score_model.py      a chosen local model's score in a range (judging.py: the one judge path)
    label_model.py      a chosen local model's label among labels, passing or not
    multi.py            graders combined by a formula (parsed with ast, never eval)

Templates (``{{ item.x }}``, ``{{ sample.output_json.a[0].b }}``) are in ``templates.py``.
"""

from afinar.graders import (  # noqa: F401  (importing each type registers it)
    label_model,
    multi,
    python,
    score_model,
    string_check,
    text_similarity,
)
from afinar.graders.base import (
    ERROR_KINDS,
    GRADERS,
    GradeResult,
    Grader,
    GraderError,
    load_grader,
    run_object,
    sample_from_text,
)

__all__ = ["ERROR_KINDS", "GRADERS", "GradeResult", "Grader", "GraderError", "load_grader",
           "run_object", "sample_from_text"]
