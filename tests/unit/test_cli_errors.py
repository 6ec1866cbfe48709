"""One error style for every command: ``error: <message>`` on stderr, exit 2, no traceback.

The commands are enumerated from the typer app, so a new command is covered without editing this
file: each one runs with each of its input files missing, and with a bad argument (unknown ids
for its required arguments, else a number option that is not a number, else an unknown option).
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup

from afinar.cli import app
from tests.helpers import run_cli

# Path parameters a command writes rather than reads: never "missing"
OUTPUTS = {"--out", "--html", "--jsonl", "--redact", "--report"}
MISSING = "no-such-file.jsonl"

# where "nope" for every required argument is valid input, the bad argument used instead
BAD = {
    "kb create": ["kb", "create", "not a name!"],
    "memory add": ["memory", "add", "not a user!", "some text"],
    "memory list": ["memory", "list", "not a user!"],
    "memory search": ["memory", "search", "not a user!", "query"],
    "memory forget": ["memory", "forget", "not a user!", "--all"],
    "projects create": ["projects", "create", "Not A Name!"],
    "models add": ["models", "add", "not a name!", "{ok}"],
}


def _commands() -> list[tuple[str, object]]:
    out = []

    def walk(cmd, path):
        if isinstance(cmd, TyperGroup):
            for name, sub in sorted(cmd.commands.items()):
                walk(sub, [*path, name])
        else:
            out.append((" ".join(path), cmd))

    walk(typer.main.get_command(app), [])
    return out


COMMANDS = _commands()


def _type(p) -> type:
    """The parameter's Python type (``list[Path]`` and ``Path | None``: Path)."""
    t = p.type_descriptor.annotation
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return args[0] if args else t


def _is_path(p) -> bool:
    return _type(p) is Path


def _opt(p) -> str | None:
    return next((o for o in p.opts if o.startswith("--")), p.opts[0]) if p.opts[0].startswith(
        "-") else None


def _filled(p, value: str) -> list[str]:
    """``p`` set to ``value`` on the command line (an option with its flag)."""
    flag = _opt(p)
    return [flag, value] if flag else [value]


def _argv(name: str, cmd, tmp: Path, override=None, fill_str="nope") -> list[str]:
    """The command with every required parameter filled (inputs: a valid small file), and the
    parameters in ``override`` set to their given values."""
    override = override or {}
    argv = name.split()
    for p in cmd.params:
        if p.name in override:
            argv += _filled(p, override[p.name])
        elif p.required:
            if _is_path(p):
                value = str(tmp / ("out.jsonl" if _opt(p) in OUTPUTS else "ok.jsonl"))
            elif _type(p) in (int, float):
                value = "1"
            else:
                value = fill_str
            argv += _filled(p, value)
    return argv


def _cases():
    for name, cmd in COMMANDS:
        inputs = [p for p in cmd.params if _is_path(p) and _opt(p) not in OUTPUTS]
        for p in inputs:
            yield pytest.param(name, "missing", p.name, id=f"{name}: missing {p.name}")
        yield pytest.param(name, "bad", None, id=f"{name}: bad argument")


def _bad_argv(name: str, cmd, tmp: Path) -> list[str]:
    if name in BAD:
        return [a.format(ok=tmp / "ok.jsonl") for a in BAD[name]]
    required = [p for p in cmd.params if p.required and not _is_path(p)]
    if required:
        return _argv(name, cmd, tmp)
    numeric = next((p for p in cmd.params if _type(p) in (int, float) and _opt(p)), None)
    if numeric is not None:
        return _argv(name, cmd, tmp, {numeric.name: "not-a-number"})
    return [*name.split(), "--no-such-option"]


@pytest.fixture
def files(tmp_path) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}]} for i in range(12)]
    (tmp_path / "ok.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _assert_one_error(code: int, out: str, err: str, argv: list[str]) -> str:
    assert code == 2, (argv, code, out, err)
    assert "Traceback" not in out + err, (argv, err)
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, (argv, err)
    return lines[0]


@pytest.mark.parametrize("name,kind,param", list(_cases()))
def test_every_command_has_one_error_style(home, files, capsys, name, kind, param):
    cmd = dict(COMMANDS)[name]
    if kind == "missing":
        argv = _argv(name, cmd, files, {param: str(files / MISSING)})
        line = _assert_one_error(*run_cli(capsys, *argv), argv)
        assert MISSING in line and "no such file" in line
    else:
        argv = _bad_argv(name, cmd, files)
        _assert_one_error(*run_cli(capsys, *argv), argv)


def test_the_table_covers_every_command():
    names = {n for n, _ in COMMANDS}
    assert {"data validate", "data preview", "data convert", "tune create", "kb add", "ask",
            "eval run", "memory list"} <= names
    assert set(BAD) <= names  # no stale overrides


@pytest.mark.parametrize("argv", [
    ["chat", "-m", "smollm2", "hi"],
    ["data", "validate", "{ok}", "-m", "smollm2"],
    ["data", "preview", "{ok}", "-m", "smollm2"],
    ["tune", "create", "--train", "{ok}", "-m", "smollm2"],
    ["models", "show", "minilm"],
])
def test_unknown_model_says_did_you_mean(home, files, capsys, argv):
    argv = [a.format(ok=files / "ok.jsonl") for a in argv]
    line = _assert_one_error(*run_cli(capsys, *argv), argv)
    assert "did you mean" in line and ("smollm2-135m-instruct" in line
                                       or "all-minilm-l6-v2" in line)


def test_ask_refuses_an_unknown_knowledge_base_before_loading_a_model(home, capsys,
                                                                      monkeypatch):
    from afinar.cli import chat_cmd

    def no_load(*a, **k):
        raise AssertionError("the chat model was loaded")

    monkeypatch.setattr(chat_cmd, "_load", no_load)
    line = _assert_one_error(*run_cli(capsys, "ask", "--kb", "nokb", "hi"), ["ask"])
    assert "no knowledge base 'nokb'" in line


def test_memory_list_of_a_user_without_memories_says_so(home, capsys):
    code, out, err = run_cli(capsys, "memory", "list", "nobody")
    assert code == 0 and "no memories for user 'nobody'" in out


def test_convert_with_a_wrong_column_names_it_and_writes_nothing(home, tmp_path, capsys):
    src = tmp_path / "qa.csv"
    src.write_text("question,answer\n" + "".join(f"q{i},a{i}\n" for i in range(5)))
    out = tmp_path / "chat.jsonl"
    argv = ["data", "convert", str(src), "-o", str(out), "--user-col", "q", "--assistant-col",
            "answer"]
    line = _assert_one_error(*run_cli(capsys, *argv), argv)
    assert "no column 'q'" in line and "question, answer" in line
    assert not out.exists() and not list(tmp_path.glob(".chat.jsonl*"))


def test_a_message_is_printed_as_is_and_not_wrapped(home, capsys, monkeypatch):
    from afinar.cli import models_cmd
    from afinar.errors import NotFound

    msg = "no model 'x[bold]y[/]' " + "z" * 200

    class Catalog:
        def get(self, name):
            raise NotFound(msg)

    monkeypatch.setattr(models_cmd, "Catalog", Catalog)
    line = _assert_one_error(*run_cli(capsys, "models", "show", "x"), ["models", "show"])
    assert line == f"error: {msg}"


def test_an_unexpected_exception_is_one_line_too(home, capsys, monkeypatch):
    from afinar.cli import models_cmd

    class Catalog:
        def get(self, name):
            raise RuntimeError("boom")

    monkeypatch.setattr(models_cmd, "Catalog", Catalog)
    code, out, err = run_cli(capsys, "models", "show", "x")
    assert code == 1 and "Traceback" not in err
    assert "error: unexpected RuntimeError: boom" in err
