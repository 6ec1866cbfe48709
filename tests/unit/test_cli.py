import json

import pytest

from afinar.cli import chat_cmd
from tests.helpers import THREADS
from tests.helpers import run_cli as run


@pytest.fixture(autouse=True)
def _fresh_cli_cache():
    chat_cmd._cache.clear()
    yield
    chat_cmd._cache.clear()


def test_config_show(home, capsys):
    code, out, _ = run(capsys, "config", "show", "--json")
    assert code == 0
    values = json.loads(out)
    assert values["home"] == str(home)
    assert values["database_url"] == f"sqlite:///{home / 'afinar.db'}"
    assert values["threads"] == THREADS  # the home fixture sets AFINAR_THREADS
    code, out, _ = run(capsys, "config", "show")
    assert "AFINAR_HOME" in out and str(home) in out


def test_models_add_list_show_remove(home, tiny_model_dir, capsys):
    code, out, _ = run(capsys, "models", "add", "tiny", str(tiny_model_dir))
    assert code == 0 and "added tiny" in out
    code, out, _ = run(capsys, "models", "list", "--json")
    rows = {r["id"]: r for r in json.loads(out)}
    assert {"smollm2-135m-instruct", "all-minilm-l6-v2", "tiny"} <= set(rows)
    assert rows["tiny"]["context_length"] == 256 and rows["tiny"]["source"] == "registered"
    code, out, _ = run(capsys, "models", "list")
    for col in ("id", "kind", "params", "context", "source", "size", "tiny"):
        assert col in out
    code, out, _ = run(capsys, "models", "show", "tiny")
    assert json.loads(out)["format"] == "hf"
    assert run(capsys, "models", "remove", "tiny")[0] == 0
    code, _, err = run(capsys, "models", "show", "tiny")
    assert code == 2 and "no model 'tiny'" in err


def test_chat_with_a_seed_prints_the_same_text_twice(home, tiny_model_dir, capsys):
    run(capsys, "models", "add", "tiny", str(tiny_model_dir))
    argv = ("chat", "-m", "tiny", "--seed", "7", "--max-tokens", "12", "hello world")
    code1, out1, err1 = run(capsys, *argv)
    code2, out2, _ = run(capsys, *argv)
    assert code1 == code2 == 0
    assert out1 == out2 and out1.strip()
    assert "prompt +" in err1 and "seed 7" in err1


def test_chat_errors_are_clear(home, capsys):
    code, out, err = run(capsys, "chat", "-m", "nope", "hi")
    assert code == 2 and "no model 'nope'" in err and "Traceback" not in err


def test_interactive_chat_keeps_history_and_resets(home, tiny_model_dir, capsys, monkeypatch):
    run(capsys, "models", "add", "tiny", str(tiny_model_dir))
    lines = iter(["hello", "again", "/reset", "after reset"])

    def fake_input(prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    seen: list[list[dict]] = []
    real = chat_cmd._answer

    def spy(gen, messages, params):
        seen.append([dict(m) for m in messages])
        return real(gen, messages, params)

    monkeypatch.setattr("builtins.input", fake_input)
    monkeypatch.setattr(chat_cmd, "_answer", spy)
    code, out, _ = run(capsys, "chat", "-m", "tiny", "--system", "be brief", "--max-tokens", "4")
    assert code == 0  # Ctrl-D (EOF) exits cleanly
    assert [len(m) for m in seen] == [2, 4, 2]  # system+user; +assistant+user; reset
    assert seen[1][2]["role"] == "assistant"
    assert seen[2] == [{"role": "system", "content": "be brief"},
                       {"role": "user", "content": "after reset"}]
    assert out.count("assistant> ") == 3


def test_python_dash_m_and_console_script():
    import subprocess
    import sys
    from pathlib import Path

    from afinar import __version__

    for cmd in ([sys.executable, "-m", "afinar", "--version"],
                [str(Path(sys.executable).with_name("afinar")), "--version"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == __version__
