"""The judge: a model grader, one metric like the others (a chosen model's verdict, decoded under
a JSON schema so it always parses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from afinar.errors import InvalidRequest
from afinar.evals.metrics.base import METRICS, Metric, Score

JUDGE_SCHEMA = {"type": "object", "properties": {
    "verdict": {"type": "string", "enum": ["correct", "incorrect"]},
    "reason": {"type": "string", "maxLength": 100}}, "required": ["verdict", "reason"],
    "additionalProperties": False}
JUDGE_PROMPT = ("You grade answers. Compare the candidate answer with the reference answer for "
                "the question. {rubric}\n\nQuestion: {question}\n\nReference answer: "
                "{reference}\n\nCandidate answer: {answer}\n\nReply with JSON: verdict "
                "(correct or incorrect) and a short reason.")


@METRICS.register()
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
