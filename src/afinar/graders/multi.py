"""``multi``: graders combined by a formula, ``calculate_output``.

``graders`` is a dict whose keys are the formula's variables (what OpenAI's service takes; a
list, or one grader, is keyed by each grader's ``name``). The formula has numbers, those
variables, ``+ - * / ^`` (``^`` is a power, as in OpenAI's docs, binding tighter than ``*``),
parentheses and ``min max abs floor ceil exp sqrt log``. It is parsed once with ``ast`` and
walked node by node (never ``eval``): an unknown variable, function or operator is a bad spec.
Graders do not nest (a ``multi`` inside a ``multi`` is refused, as OpenAI does).

The result's ``sub_rewards`` are the variables' scores; any sub-grader's error flag is the
result's too. A formula that fails on the numbers (division by zero, ``log`` of 0) scores 0 with
``other_error``.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any, Literal

from afinar.graders.base import GRADERS, GradeResult, Grader, Spec, build, join, spec_error

FUNCTIONS = {"min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil,
             "exp": math.exp, "sqrt": math.sqrt, "log": math.log}
ARITY = {"min": (1, 64), "max": (1, 64), "abs": (1, 1), "floor": (1, 1), "ceil": (1, 1),
         "exp": (1, 1), "sqrt": (1, 1), "log": (1, 2)}
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.Div: operator.truediv, ast.Pow: operator.pow}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
MAX_FORMULA = 4096


class FormulaError(ValueError):
    pass


def parse_formula(text: str, variables: set[str]) -> ast.expr:
    """The checked expression tree of ``text``; ``FormulaError`` says what is wrong."""
    if len(text) > MAX_FORMULA:
        raise FormulaError(f"longer than {MAX_FORMULA} characters")
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")
    except SyntaxError as e:
        raise FormulaError(f"not a formula ({e.msg} at column {e.offset})") from None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.Load, *BINARY, *UNARY)):
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            continue
        if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
            continue
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            continue
        if isinstance(node, ast.Name):
            if node.id not in variables and node.id not in FUNCTIONS:
                raise FormulaError(f"unknown variable {node.id!r}; the graders are "
                                   f"{', '.join(sorted(variables))}")
            continue
        if isinstance(node, ast.Call):
            fn = node.func.id if isinstance(node.func, ast.Name) else None
            if fn not in FUNCTIONS or node.keywords:
                raise FormulaError(f"unknown function; known: {', '.join(FUNCTIONS)}")
            lo, hi = ARITY[fn]
            if not lo <= len(node.args) <= hi:
                raise FormulaError(f"{fn} takes {lo}" + (f" to {hi}" if hi > lo else "")
                                   + f" argument{'s' if hi > 1 else ''}")
            continue
        raise FormulaError(f"{type(node).__name__} is not allowed (numbers, grader names, "
                           "+ - * / ^, parentheses and min max abs floor ceil exp sqrt log)")
    for node in ast.walk(tree):  # a function name used as a value
        if isinstance(node, ast.Name) and node.id in FUNCTIONS and node.id not in variables:
            if not any(isinstance(p, ast.Call) and p.func is node for p in ast.walk(tree)):
                raise FormulaError(f"{node.id} is a function: {node.id}(...)")
    return tree.body


def evaluate(node: ast.expr, values: dict[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(values[node.id])
    if isinstance(node, ast.BinOp):
        return float(BINARY[type(node.op)](evaluate(node.left, values),
                                           evaluate(node.right, values)))
    if isinstance(node, ast.UnaryOp):
        return float(UNARY[type(node.op)](evaluate(node.operand, values)))
    if isinstance(node, ast.Call):
        return float(FUNCTIONS[node.func.id](*(evaluate(a, values) for a in node.args)))
    raise AssertionError(type(node))  # parse_formula let nothing else through


class MultiSpec(Spec):
    type: Literal["multi"]
    graders: dict[str, Any] | list[Any]
    calculate_output: str


@GRADERS.register("multi")
class Multi(Grader):
    type = "multi"
    Spec = MultiSpec

    def __init__(self, spec, path, ctx):
        super().__init__(spec, path, ctx)
        raw = spec.graders
        if isinstance(raw, dict) and "type" in raw and isinstance(raw.get("type"), str):
            raw = [raw]  # one grader object, as OpenAI's schema types it
        if isinstance(raw, list):
            keyed = {}
            for i, g in enumerate(raw):
                key = g.get("name") if isinstance(g, dict) else None
                if not isinstance(key, str) or not key.isidentifier():
                    raise self.bad(f"graders.{i}.name", "graders given as a list are named by "
                                   "their name, which must be a formula variable (letters, "
                                   "digits, _)")
                keyed[key] = g
            raw = keyed
        if not raw:
            raise self.bad("graders", "at least one grader")
        self.graders: dict[str, Grader] = {}
        for key, g in raw.items():
            where = join(path, "graders", key)
            if not key.isidentifier() or key in FUNCTIONS:
                raise spec_error(self.ctx, where, f"{key!r} cannot be a formula variable (letters, "
                               "digits and _, not a function name)")
            if isinstance(g, dict) and g.get("type") == "multi":
                raise spec_error(self.ctx, join(where, "type"), "multi graders do not nest")
            self.graders[key] = build(g, where, ctx)
        try:
            self.formula = parse_formula(spec.calculate_output, set(self.graders))
        except FormulaError as e:
            raise self.bad("calculate_output", str(e)) from None

    @property
    def range(self):
        return None

    def models(self):
        return sorted({m for g in self.graders.values() for m in g.models()})

    def grade_many(self, samples, items):
        per = {k: g.grade_many(samples, items) for k, g in self.graders.items()}
        out = []
        for i in range(len(samples)):
            subs = {k: rs[i] for k, rs in per.items()}
            seconds = sum(r.metadata.get("execution_time", 0.0) for r in subs.values())
            out.append(self._finish(self._combine(subs), seconds))
        return out

    def score(self, sample, item):
        return self._combine({k: g.grade(sample, item) for k, g in self.graders.items()})

    def _combine(self, subs: dict[str, GradeResult]) -> GradeResult:
        errors = {k: any(r.errors.get(k) for r in subs.values())
                  for k in next(iter(subs.values())).errors}
        details = {f"{key}.{kind}": d for key, r in subs.items()
                   for kind, d in r.metadata.get("error_details", {}).items()}
        sub_rewards = {k: r.score for k, r in subs.items()}
        meta: dict[str, Any] = {"token_usage": _usage([r.metadata.get("token_usage")
                                                       for r in subs.values()])}
        per_model: dict[str, list] = {}
        for r in subs.values():
            for model, u in (r.metadata.get("token_usage_per_model") or {}).items():
                per_model.setdefault(model, []).append(u)
        if per_model:
            meta["sampled_model_name"] = ", ".join(sorted(per_model))
            meta["token_usage_per_model"] = {m: _usage(us) for m, us in per_model.items()}
        try:
            value = evaluate(self.formula, sub_rewards)
        except (ArithmeticError, ValueError, TypeError) as e:
            value = 0.0
            errors["other_error"] = True
            details["calculate_output"] = f"{type(e).__name__}: {e}"
        if details:
            meta["error_details"] = details
        return GradeResult(value, sub_rewards, errors, meta)


def _usage(usages: list[Any]) -> dict[str, int] | None:
    got = [u for u in usages if isinstance(u, dict)]
    if not got:
        return None
    return {k: sum(int(u.get(k, 0)) for u in got)
            for k in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens")}
