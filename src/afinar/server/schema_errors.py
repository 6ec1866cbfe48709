"""pydantic's validation errors as OpenAI's error object: the most specific error of a
union, ``param`` as the field's dotted path without pydantic's member names, OpenAI's wording
and codes ("Unrecognized request argument supplied", "Missing required parameter")."""

from __future__ import annotations

import re
from typing import Any


# pydantic names union members in an error's location (discriminator tags, "str",
# "list[...]", "function-after[...]", class names): not fields, so not part of ``param``
_UNION_TAG = re.compile(r"^([a-z]+-[a-z-]+|[a-z]+\[.*\]|str|int|float|bool|none|"
                        r"[A-Z][A-Za-z]+|literal\[.*\])$")
_UNION_FIELDS = {"response_format", "filters", "format", "input", "content", "output",
                 "query", "prompt", "stop"}  # fields whose value is a tagged union
_TAGS = {"str", "list", "texts", "tokens", "token_lists", "system", "developer", "user",
         "assistant", "tool", "function", "text", "image_url",
         "input_audio", "file", "refusal", "file_search", "message", "function_call",
         "function_call_output", "skipped", "input_text", "output_text", "input_image",
         "input_file", "comparison", "compound", "json_object", "json_schema"}


def error_param(loc: tuple | list) -> str | None:
    """``("body", "messages", 0, "user", "content", "str")`` -> ``"messages.0.content"``."""
    out, prev = [], None
    for p in loc:
        skip = p in ("body", "query", "path") and prev is None or isinstance(p, str) and (
            _UNION_TAG.match(p) or p in _TAGS and (isinstance(prev, int)
                                                   or prev in _UNION_FIELDS))
        if not skip:
            out.append(str(p))
        prev = p
    return ".".join(out) or None


def error_message(errors: list[dict[str, Any]]) -> tuple[str, str | None, str]:
    """(message, param, code) for pydantic's errors: the most specific one (a union's member
    that got furthest), with the alternatives offered at the same place."""
    depth = [len((error_param(e.get("loc", ())) or "").split(".")) for e in errors]
    first = errors[depth.index(max(depth))] if errors else {}
    param, kind = error_param(first.get("loc", ())), first.get("type", "")
    ctx = first.get("ctx") or {}
    if kind == "extra_forbidden":
        if param and "." not in param:
            return f"Unrecognized request argument supplied: {param}", param, "unknown_parameter"
        return f"Unknown parameter: '{param}'.", param, "unknown_parameter"
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    if kind == "union_tag_not_found":
        where = f"{param}.{ctx.get('discriminator', 'type')}".strip("'") if param else "type"
        where = where.replace("'", "")
        return f"Missing required parameter: '{where}'.", where, "missing_required_parameter"
    if kind == "union_tag_invalid":
        where = f"{param}.{str(ctx.get('discriminator', 'type')).strip(chr(39))}"
        return (f"Invalid value: {ctx.get('tag')!r}. Supported values are: "
                f"{ctx.get('expected_tags')}.", where, "invalid_value")
    same = [e.get("msg", "invalid") for e in errors if error_param(e.get("loc", ())) == param]
    alternatives = list(dict.fromkeys(same))[:4]
    return (f"Invalid value for '{param or 'request'}': " + "; or ".join(alternatives),
            param, "invalid_value")
