"""A small subset of Go's text/template, enough to render Ollama ``TEMPLATE`` s in Python.

It exists to check an Ollama Modelfile without Ollama: ``verify`` renders the exported TEMPLATE
for sample conversations and compares the text with the Hugging Face chat template's rendering.
Supported: text, ``{{- ... -}}`` trimming, ``{{ .Field }}``/``{{ $.Field }}``/``{{ $v.Field }}``,
``{{ $v := ... }}``, ``range`` (with ``$i, $v :=``), ``if``/``else if``/``else``/``end``, string and
integer literals, parentheses and the functions ``eq ne and or not len slice index``. Anything
else raises ``TemplateError`` (a template this cannot read is not verified, so it is refused).
"""

from __future__ import annotations

import re
from typing import Any

from afinar.errors import InvalidRequest


class TemplateError(InvalidRequest):
    code = "bad_template"


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(?:(\()|(\))|("(?:[^"\\]|\\.)*")|(-?\d+)|(:=)|(,)|'
                    r'(\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*|\.[A-Za-z0-9_.]*|[A-Za-z_]\w*))')


def _lex(src: str) -> list[tuple[str, str]]:
    """Text and action tokens, with Go's trim markers applied."""
    out: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(src):
        text = src[pos:m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        if text:
            out.append(("text", text))
        out.append(("action", m.group(2).strip()))
        trim_next, pos = bool(m.group(3)), m.end()
    text = src[pos:]
    if "{{" in text:
        raise TemplateError("unterminated {{ in the template")
    out.append(("text", text.lstrip() if trim_next else text))
    return out


def _words(expr: str) -> list[str]:
    toks, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot read {expr[pos:]!r} in the template")
        toks.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    return toks


def _truth(v: Any) -> bool:
    return bool(v) if v is not None else False


def _field(v: Any, names: list[str]) -> Any:
    for n in names:
        if not n:
            continue
        if not isinstance(v, dict) or n not in v:
            raise TemplateError(f"no field {n} in the template's data")
        v = v[n]
    return v


_FUNCS = {
    "eq": lambda a, *b: any(a == x for x in b), "ne": lambda a, b: a != b,
    "not": lambda a: not _truth(a), "len": len, "index": lambda a, *i: _index(a, i),
    "slice": lambda a, i=0, j=None: a[i:j],
}


def _index(a, idx):
    for i in idx:
        a = a[i]
    return a


class _Ctx:
    def __init__(self, root: Any):
        self.root, self.vars = root, [{"$": root}]

    def lookup(self, name: str) -> Any:
        for scope in reversed(self.vars):
            if name in scope:
                return scope[name]
        raise TemplateError(f"undefined variable {name} in the template")


def _eval(toks: list[str], ctx: _Ctx, dot: Any) -> Any:
    args, i = [], 0
    while i < len(toks):
        t = toks[i]
        if t == "(":
            depth, j = 1, i + 1
            while depth:
                if j >= len(toks):
                    raise TemplateError("unbalanced parentheses in the template")
                depth += {"(": 1, ")": -1}.get(toks[j], 0)
                j += 1
            args.append(("v", _eval(toks[i + 1:j - 1], ctx, dot)))
            i = j
            continue
        if t.startswith('"'):
            args.append(("v", bytes(t[1:-1], "utf-8").decode("unicode_escape")))
        elif re.fullmatch(r"-?\d+", t):
            args.append(("v", int(t)))
        elif t.startswith("$"):
            name, *rest = t.split(".")
            args.append(("v", _field(ctx.lookup(name), rest)))
        elif t.startswith("."):
            args.append(("v", _field(dot, t.split(".")[1:])))
        elif t in _FUNCS or t in ("and", "or"):
            args.append(("f", t))
        else:
            raise TemplateError(f"unsupported word {t!r} in the template")
        i += 1
    if not args:
        raise TemplateError("empty action in the template")
    if args[0][0] == "f":
        name, vals = args[0][1], [v for _, v in args[1:]]
        if name == "and":
            return next((v for v in vals if not _truth(v)), vals[-1])
        if name == "or":
            return next((v for v in vals if _truth(v)), vals[-1])
        return _FUNCS[name](*vals)
    if len(args) != 1:
        raise TemplateError("a value followed by arguments in the template")
    return args[0][1]


def _parse(tokens: list[tuple[str, str]], i: int, stop: tuple[str, ...]):
    """Nodes until one of ``stop`` (an action's first word): (nodes, index, stopping action)."""
    nodes: list = []
    while i < len(tokens):
        kind, val = tokens[i]
        if kind == "text":
            nodes.append(("text", val))
            i += 1
            continue
        word = val.split()[0] if val.split() else ""
        if word in stop:
            return nodes, i, val
        if word == "if":
            branches, i = [], i
            cond = val[2:]
            while True:
                body, i, end = _parse(tokens, i + 1, ("else", "end"))
                branches.append((cond, body))
                if end == "end":
                    break
                rest = end[4:].strip()
                cond = rest[2:] if rest.startswith("if") else None
                if cond is None:
                    body, i, _ = _parse(tokens, i + 1, ("end",))
                    branches.append((None, body))
                    break
            nodes.append(("if", branches))
            i += 1
        elif word == "range":
            body, i, _ = _parse(tokens, i + 1, ("end",))
            m = re.fullmatch(r"range\s+(?:(\$\w+)\s*(?:,\s*(\$\w+))?\s*:=\s*)?(.+)", val, re.S)
            if not m:
                raise TemplateError(f"cannot read {{{{ {val} }}}}")
            nodes.append(("range", m.group(1), m.group(2), m.group(3), body))
            i += 1
        elif word in ("else", "end"):
            raise TemplateError(f"unexpected {{{{ {val} }}}} in the template")
        elif word in ("with", "template", "define", "block"):
            raise TemplateError(f"{{{{ {word} }}}} is outside the supported subset")
        else:
            nodes.append(("action", val))
            i += 1
    if stop:
        raise TemplateError(f"missing {{{{ {stop[-1]} }}}} in the template")
    return nodes, i, None


def _exec(nodes, ctx: _Ctx, dot: Any, out: list[str]) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "action":
            m = re.fullmatch(r"(\$\w+)\s*:?=\s*(.+)", node[1], re.S)
            if m:
                ctx.vars[-1][m.group(1)] = _eval(_words(m.group(2)), ctx, dot)
            else:
                v = _eval(_words(node[1]), ctx, dot)
                out.append("" if v is None else str(v))
        elif kind == "if":
            for cond, body in node[1]:
                if cond is None or _truth(_eval(_words(cond), ctx, dot)):
                    ctx.vars.append({})
                    _exec(body, ctx, dot, out)
                    ctx.vars.pop()
                    break
        elif kind == "range":
            _, a, b, expr, body = node
            seq = _eval(_words(expr), ctx, dot) or []
            for idx, item in enumerate(seq):
                scope = {}
                if a and b:
                    scope = {a: idx, b: item}
                elif a:
                    scope = {a: item}
                ctx.vars.append(scope)
                _exec(body, ctx, item, out)
                ctx.vars.pop()


def render(template: str, data: dict[str, Any]) -> str:
    """``template`` rendered with ``data`` (Ollama's fields: Messages, System, Prompt...)."""
    nodes, _, _ = _parse(_lex(template), 0, ())
    out: list[str] = []
    _exec(nodes, _Ctx(data), data, out)
    return "".join(out)


def ollama_data(messages: list[dict], system: str | None = None) -> dict[str, Any]:
    """The data Ollama hands a chat TEMPLATE: ``.Messages`` (Role, Content) and ``.System``."""
    msgs = [{"Role": m["role"], "Content": m.get("content") or ""} for m in messages]
    sys_msg = next((m["Content"] for m in msgs if m["Role"] == "system"), system or "")
    return {"Messages": msgs, "System": sys_msg, "Prompt": "", "Response": ""}
