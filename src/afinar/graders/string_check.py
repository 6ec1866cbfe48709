"""``string_check``: the rendered ``input`` against the rendered ``reference``, 1 or 0.

``eq`` equal, ``ne`` not equal, ``like`` the reference is a substring of the input (case
sensitive), ``ilike`` the same ignoring case (OpenAI's definitions)."""

from __future__ import annotations

from typing import Literal

from afinar.graders.base import GRADERS, Grader, Spec

OPERATIONS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "like": lambda a, b: b in a,
    "ilike": lambda a, b: b.casefold() in a.casefold(),
}


class StringCheckSpec(Spec):
    type: Literal["string_check"]
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]


@GRADERS.register("string_check")
class StringCheck(Grader):
    type = "string_check"
    Spec = StringCheckSpec

    def __init__(self, spec, path, ctx):
        super().__init__(spec, path, ctx)
        self.input = self.template(spec.input, "input")
        self.reference = self.template(spec.reference, "reference")

    def score(self, sample, item):
        a, b = self.input.render(sample, item), self.reference.render(sample, item)
        return float(OPERATIONS[self.spec.operation](a, b))
