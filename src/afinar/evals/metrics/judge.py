"""The judge: a model grader, one metric like the others. It is the graders' ``label_model``
(``afinar.graders.label_model``: a chosen model's verdict, decoded under a JSON schema so it always
parses), labels ``correct`` / ``incorrect``, over the question, the reference and the answer: one
model-judge code path for evaluations, rewards and gates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from afinar.errors import InvalidRequest
from afinar.evals.metrics.base import METRICS, Metric, Score

JUDGE_LABELS = ["correct", "incorrect"]
JUDGE_PROMPT = ("You grade answers. Compare the candidate answer with the reference answer for "
                "the question. {{ item.rubric }}\n\nQuestion: {{ item.question }}\n\nReference "
                "answer: {{ item.reference }}\n\nCandidate answer: {{ sample.output_text }}")


def judge_grader_spec(model: str | None) -> dict[str, Any]:
    """The judge as a ``label_model`` grader spec (OpenAI's shape)."""
    spec: dict[str, Any] = {"type": "label_model", "name": "judge",
                            "input": [{"role": "user", "content": JUDGE_PROMPT}],
                            "labels": JUDGE_LABELS, "passing_labels": ["correct"],
                            # ~130 characters of steps at most: 200 tokens hold the verdict
                            "sampling_params": {"temperature": 0.0,
                                                "max_completions_tokens": 200}}
    if model:
        spec["model"] = model
    return spec


@METRICS.register()
class Judge(Metric):
    """A chosen model's verdict, decoded under a JSON schema so it always parses."""

    name = "judge"
    description = "a judge model's constrained-JSON verdict (correct / incorrect)"
    loader: Callable[[str], Any] | None = None  # set by the runner: model id -> LoadedModel

    def __init__(self, model: str | None = None, rubric: str = "The candidate is correct "
                 "when it states the same facts as the reference."):
        self.model, self.rubric = model, rubric
        self._grader = None

    def score(self, pred, case):
        from afinar.graders import load_grader, sample_from_text

        if self.loader is None:
            raise InvalidRequest("the judge metric needs a model loader", param="metrics")
        if self._grader is None or self._grader.loader is not self.loader:
            self._grader = load_grader(judge_grader_spec(self.model), model_loader=self.loader)
        r = self._grader.grade(sample_from_text(pred.text, {"type": "text"}),
                               {"question": case.question, "reference": case.reference,
                                "rubric": self.rubric})
        if r.error:
            detail = r.metadata.get("error_details", {}).get(r.error, "")
            return Score(0.0, f"{r.error}: {detail}"[:120])
        return Score(r.score, (r.metadata.get("reason") or r.metadata["label"])[:120])
