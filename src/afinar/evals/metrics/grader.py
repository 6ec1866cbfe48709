"""Any grader (``afinar.graders``, OpenAI's shapes) as an evaluation metric.

    metrics:
      - grader: {type: string_check, name: exact, operation: eq,
                 input: "{{ sample.output_text }}", reference: "{{ item.reference }}"}
      - grader: graders/tone.yaml          # relative to eval.yaml

The metric's column is the grader's ``name``. ``item`` is the case's ``metadata`` plus
``reference`` (the reference answer) and ``question`` (the last user message); ``sample`` is the
prediction's text (``sample_from_text``: ``output_json`` when it parses). The score is the
grader's, mapped onto [0, 1] from the grader's range when that is not [0, 1] (``score_model``
with ``range: [0, 10]``, ``cosine``); a ``multi`` formula's value is kept as it is. A grader's
error flag becomes the note (``invalid_variable: item.x: no such variable``). The bootstrap
interval is the evaluation's, as for every metric. The file is read and the spec checked when the
configuration is (``inline``), so a bad grader stops the run before any answer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from afinar.errors import InvalidRequest
from afinar.evals.metrics.base import METRICS, Metric, Score


def inline(spec: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    """``{grader: FILE}`` with the file's grader object in its place (a relative path is read
    from ``base``), after checking the grader; ``where`` names the metric in messages."""
    from afinar.graders import load_grader
    from afinar.graders.base import read_spec_file

    g = spec.get("grader")
    if isinstance(g, str):
        path = Path(g) if Path(g).is_absolute() else base / g
        load_grader(path)  # its messages name the file
        return {**spec, "grader": read_spec_file(path)}
    if not isinstance(g, dict):
        raise InvalidRequest(f"{where}.grader: a grader object ({{type: string_check, ...}}) or "
                             "a .yaml/.yml/.json file", param=f"{where}.grader")
    try:
        load_grader(g)
    except InvalidRequest as e:
        raise InvalidRequest(f"{where}.{e.message}", param=f"{where}.{e.param}") from None
    return spec


def column(spec: str | dict[str, Any]) -> str:
    """The metric's name in the table: a grader metric's is its grader's name."""
    if isinstance(spec, str):
        return spec
    g = spec.get("grader")
    if spec.get("name") == "grader" and isinstance(g, dict) and isinstance(g.get("name"), str):
        return g["name"]
    return str(spec.get("name"))


@METRICS.register()
class GraderMetric(Metric):
    """A grader in OpenAI's shape, scored on each case."""

    name = "grader"
    description = "any grader (string_check, text_similarity, python, score_model, ...)"
    loader: Callable[[str], Any] | None = None  # set by the runner: model id -> LoadedModel

    def __init__(self, grader: dict[str, Any] | str | None = None, **options: Any):
        super().__init__(**options)
        if grader is None:
            raise InvalidRequest("metric grader needs grader: {type: ..., name: ...} or "
                                 "grader: FILE.yaml", param="metrics")
        from afinar.graders import load_grader

        self.spec = grader
        self._grader = load_grader(grader)
        self._loader = None

    def score(self, pred, case):
        from afinar.graders import load_grader, sample_from_text

        if self.loader is not None and self._loader is not self.loader:
            self._grader, self._loader = load_grader(self.spec, model_loader=self.loader), \
                self.loader
        item = {**case.metadata, "reference": case.reference, "question": case.question}
        r = self._grader.grade(sample_from_text(pred.text), item)
        if r.error:
            detail = r.metadata.get("error_details", {}).get(r.error, "")
            return Score(0.0, f"{r.error}: {detail}"[:120])
        value, span = r.score, self._grader.range
        if span is not None and span != (0.0, 1.0):
            lo, hi = span
            value = min(1.0, max(0.0, (value - lo) / (hi - lo)))
        return Score(value)
