"""OpenAI's vector-store filters on attributes: comparison (eq, ne, gt, gte, lt, lte, in, nin)
and compound (and, or), checked before any result is ranked."""

from __future__ import annotations

from typing import Any

from afinar.errors import InvalidRequest

COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")


def validate_filter(f: Any, where: str = "filters") -> None:
    if not isinstance(f, dict) or "type" not in f:
        raise InvalidRequest(f"{where} must be an object with a 'type'", param=where)
    t = f["type"]
    if t in ("and", "or"):
        subs = f.get("filters")
        if not isinstance(subs, list) or not subs:
            raise InvalidRequest(f"{where}.filters must be a non-empty list", param=where)
        for i, sub in enumerate(subs):
            validate_filter(sub, f"{where}.filters[{i}]")
    elif t in COMPARISONS:
        if not isinstance(f.get("key"), str) or "value" not in f:
            raise InvalidRequest(f"{where} needs 'key' and 'value'", param=where)
        if t in ("in", "nin") and not isinstance(f["value"], list):
            raise InvalidRequest(f"{where}.value must be a list for {t}", param=where)
    else:
        raise InvalidRequest(f"{where}.type {t!r} is not one of {', '.join(COMPARISONS)}, and, or",
                             param=where)


def matches(f: dict | None, attrs: dict[str, Any]) -> bool:
    if f is None:
        return True
    t = f["type"]
    if t == "and":
        return all(matches(s, attrs) for s in f["filters"])
    if t == "or":
        return any(matches(s, attrs) for s in f["filters"])
    if f["key"] not in attrs:
        return t in ("ne", "nin")
    a, v = attrs[f["key"]], f["value"]
    try:
        return {"eq": lambda: a == v, "ne": lambda: a != v, "gt": lambda: a > v,
                "gte": lambda: a >= v, "lt": lambda: a < v, "lte": lambda: a <= v,
                "in": lambda: a in v, "nin": lambda: a not in v}[t]()
    except TypeError:  # comparing a string with a number: no match
        return False
