"""``score_model``: a chosen local model scores the sample within ``range`` (default [0, 1]).

The reply is decoded under ``{"result": number in range, "steps": [{"description",
"conclusion"}]}`` (OpenAI's judge shape; at most two short steps, so a verdict fits the token
budget); a result outside the range is clipped to it, as OpenAI does. The shared judge code is
``judging.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from afinar.graders.base import GRADERS, GradeResult
from afinar.graders.judging import STEPS_SCHEMA, JudgeSpec, ModelJudge, SamplingSpec, reason


class ScoreModelSpec(JudgeSpec):
    type: Literal["score_model"]
    range: list[float] = Field(default_factory=lambda: [0.0, 1.0], min_length=2, max_length=2)
    sampling_params: SamplingSpec | None = None

    @field_validator("range")
    @classmethod
    def _ordered(cls, v: list[float]) -> list[float]:
        if not v[0] < v[1]:
            raise ValueError("range is [low, high] with low < high")
        return v


@GRADERS.register("score_model")
class ScoreModel(ModelJudge):
    type = "score_model"
    Spec = ScoreModelSpec

    @property
    def range(self):
        lo, hi = self.spec.range
        return (float(lo), float(hi))

    def schema(self):
        lo, hi = self.range
        return {"type": "object", "properties": {
            "result": {"type": "number", "minimum": lo, "maximum": hi}, "steps": STEPS_SCHEMA},
            "required": ["result", "steps"], "additionalProperties": False}

    def instruction(self):
        lo, hi = self.range
        return (f"Grade the answer above with a number from {lo:g} (worst) to {hi:g} (best). "
                "Reply with JSON: result (the number) and steps (one or two short reasons).")

    def score(self, sample, item):
        value, meta = self.ask(sample, item)
        lo, hi = self.range
        result = value.get("result")
        if isinstance(result, bool) or not isinstance(result, (int, float)):
            errors = {"model_grader_parse_error": True}
            return GradeResult(0.0, errors=errors, metadata={
                **meta, "error_details": {"model_grader_parse": f"result {result!r}"}})
        return GradeResult(min(hi, max(lo, float(result))),
                           metadata={**meta, "reason": reason(value)})
