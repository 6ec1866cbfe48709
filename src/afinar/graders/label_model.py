"""``label_model``: a chosen local model picks one of ``labels``; the score is 1 when the label is
one of ``passing_labels``, else 0.

The reply is decoded under ``{"result": one of the labels, "steps": [...]}``, so it is always a
known label (or cut by the token budget: ``model_grader_parse_error``). ``metadata["label"]`` is
the label. The evaluation's ``judge`` metric is this grader (``evals/metrics/judge.py``); the
shared judge code is ``judging.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from afinar.graders.base import GRADERS, GradeResult
from afinar.graders.judging import STEPS_SCHEMA, JudgeSpec, ModelJudge, SamplingSpec, reason


class LabelModelSpec(JudgeSpec):
    type: Literal["label_model"]
    labels: list[str] = Field(min_length=1, max_length=256)
    passing_labels: list[str] = Field(min_length=1, max_length=256)
    sampling_params: SamplingSpec | None = None  # afinar: OpenAI's label_model has none

    @model_validator(mode="after")
    def _subset(self):
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be different from each other")
        if missing := [x for x in self.passing_labels if x not in self.labels]:
            raise ValueError(f"passing_labels must be among the labels; not: {', '.join(missing)}")
        return self


@GRADERS.register("label_model")
class LabelModel(ModelJudge):
    type = "label_model"
    Spec = LabelModelSpec

    def schema(self):
        return {"type": "object", "properties": {
            "result": {"type": "string", "enum": list(self.spec.labels)}, "steps": STEPS_SCHEMA},
            "required": ["result", "steps"], "additionalProperties": False}

    def instruction(self):
        return (f"Label the answer above with one of: {', '.join(self.spec.labels)}. Reply with "
                "JSON: result (the label) and steps (one or two short reasons).")

    def score(self, sample, item):
        value, meta = self.ask(sample, item)
        label = value.get("result")
        return GradeResult(float(label in self.spec.passing_labels),
                           metadata={**meta, "label": label, "reason": reason(value)})
