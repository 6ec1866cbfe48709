"""Grader templates: ``{{ item.x }}``, ``{{ sample.output_text }}``,
``{{sample.output_json.a[0].b}}``, as OpenAI's graders write them.

A template is parsed once, when the grader is loaded: every ``{{ ... }}`` must be a path that
starts at ``item`` or ``sample`` and goes on by ``.name``, ``[0]`` or ``["key"]``; anything else
is a bad spec (``InvalidRequest`` naming the field). Rendering looks the path up in the sample and
the item: a string is inserted as it is, any other value as JSON. A path that is not there raises
``InvalidVariable`` (the grader scores 0 with ``invalid_variable_error``); a path into
``sample.output_json`` when the sample was not JSON raises ``SampleNotJson``
(``sample_parse_error``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from afinar.errors import InvalidRequest

ROOTS = ("item", "sample")
_BRACES = re.compile(r"\{\{(.*?)\}\}", re.S)
_NAME = re.compile(r"[A-Za-z_][\w\-]*")
_STEP = re.compile(r"""\.(?P<name>[A-Za-z_][\w\-]*)|\[\s*(?P<index>-?\d+)\s*\]"""
                   r"""|\[\s*(?P<q>["'])(?P<key>.*?)(?P=q)\s*\]""")


class InvalidVariable(Exception):
    """A template variable that the sample or item does not have."""


class SampleNotJson(InvalidVariable):
    """A template reads ``sample.output_json`` of a sample whose output is not JSON."""


@dataclass(frozen=True)
class Path:
    text: str  # as written, for messages
    root: str
    steps: tuple[str | int, ...]

    def lookup(self, sample: dict[str, Any], item: dict[str, Any]) -> Any:
        value: Any = sample if self.root == "sample" else item
        for i, step in enumerate(self.steps):
            if self.root == "sample" and i == 1 and self.steps[0] == "output_json" \
                    and value is None:
                raise SampleNotJson(f"{self.text}: the sample's output is not JSON")
            try:
                if isinstance(step, int):
                    if not isinstance(value, list):
                        raise TypeError
                    value = value[step]
                else:
                    if not isinstance(value, dict):
                        raise TypeError
                    value = value[step]
            except (KeyError, IndexError, TypeError):
                raise InvalidVariable(f"{self.text}: no such variable") from None
        if self.root == "sample" and self.steps == ("output_json",) and value is None:
            raise SampleNotJson(f"{self.text}: the sample's output is not JSON")
        return value


def parse_path(text: str, field: str) -> Path:
    """``item.a[0]["b c"]`` -> Path; a bad one is an ``InvalidRequest`` naming ``field``."""
    src = text.strip()
    m = _NAME.match(src)
    root = m.group(0) if m else ""
    if root not in ROOTS:
        raise InvalidRequest(f"{field}: template variable {{{{ {src} }}}} must start with item. "
                             "or sample.", param=field)
    steps: list[str | int] = []
    pos = m.end()
    while pos < len(src):
        s = _STEP.match(src, pos)
        if not s:
            raise InvalidRequest(f"{field}: cannot read template variable {{{{ {src} }}}} at "
                                 f"{src[pos:]!r}", param=field)
        if s.group("name") is not None:
            steps.append(s.group("name"))
        elif s.group("index") is not None:
            steps.append(int(s.group("index")))
        else:
            steps.append(s.group("key"))
        pos = s.end()
    return Path(src, root, tuple(steps))


def render_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class Template:
    """A string with ``{{ path }}`` variables, parsed once."""

    def __init__(self, text: str, field: str):
        self.text = text
        self.parts: list[str | Path] = []
        pos = 0
        for m in _BRACES.finditer(text):
            if m.start() > pos:
                self.parts.append(text[pos:m.start()])
            self.parts.append(parse_path(m.group(1), field))
            pos = m.end()
        if pos < len(text):
            self.parts.append(text[pos:])
        rest = "".join(p for p in self.parts if isinstance(p, str))
        if "{{" in rest or "}}" in rest:
            raise InvalidRequest(f"{field}: unbalanced {{{{ }}}} in the template", param=field)

    @property
    def paths(self) -> list[Path]:
        return [p for p in self.parts if isinstance(p, Path)]

    def render(self, sample: dict[str, Any], item: dict[str, Any]) -> str:
        return "".join(p if isinstance(p, str) else render_value(p.lookup(sample, item))
                       for p in self.parts)


__all__ = ["InvalidVariable", "Path", "SampleNotJson", "Template", "parse_path", "render_value"]
