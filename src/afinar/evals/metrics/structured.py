"""Metrics on structured answers: a label out of a label set, JSON validity, a JSON schema, JSON
fields against the reference's."""

from __future__ import annotations

import difflib
import re
from typing import Any

from afinar.errors import InvalidRequest
from afinar.evals.metrics.base import METRICS, Metric, Score, normalize, parse_json


@METRICS.register()
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


@METRICS.register()
class JsonValid(Metric):
    name = "json_valid"
    description = "the whole answer parses as JSON"

    def score(self, pred, case):
        return Score(float(parse_json(pred.text)[0]))


@METRICS.register()
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


@METRICS.register()
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
