"""Loss masks: trained tokens are exactly the weighted assistant turns and their end-of-turn
token; previews show them; converters produce valid chat data."""

import json

import pytest
from transformers import AutoTokenizer

from afinar.data.encode import TemplateError, encode_chat, encode_example
from afinar.data.formats import parse_example
from afinar.data.preview import example_segments, plain
from afinar.models.templates import render_ids


@pytest.fixture
def tok(tiny_model_template):
    return AutoTokenizer.from_pretrained(tiny_model_template)


def trained_text(tok, enc):
    return [tok.decode([i]) for i, m in zip(enc.input_ids, enc.trained) if m]


def test_mask_covers_assistant_turns_and_their_end_of_turn(tok):
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "world"},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "fox"}]
    enc = encode_chat(tok, msgs)
    assert enc.input_ids == render_ids(tok, msgs, add_generation_prompt=False)
    assert "".join(trained_text(tok, enc)) == "world<|im_end|>fox<|im_end|>"
    assert enc.labels()[0] == -100


def test_weight_zero_turns_are_not_trained(tok):
    msgs = [{"role": "user", "content": "hello"},
            {"role": "assistant", "content": "quick", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "lazy dog", "weight": 1}]
    assert "".join(trained_text(tok, encode_chat(tok, msgs))) == "lazy dog<|im_end|>"


def test_tool_calls_are_trained_and_tool_results_are_not(tok):
    msgs = [{"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "get", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": "It is sunny."}]
    tools = [{"type": "function", "function": {"name": "get", "parameters": {}}}]
    enc = encode_chat(tok, msgs, tools)
    text = "".join(trained_text(tok, enc))
    assert text == ('<tool_call>\n{"name": "get", "arguments": {"city": "Paris"}}\n</tool_call>'
                    "<|im_end|>It is sunny.<|im_end|>")
    assert "sunny<|im_end|>" not in text.replace("It is sunny.", "")
    full = tok.decode(enc.input_ids)
    assert "<tools>" in full  # the definitions reach the model (system preamble)


def test_other_formats_masks(tok):
    ex, _ = parse_example({"prompt": "2+2=", "completion": "4"}, 1)
    enc = encode_example(tok, ex)
    assert "".join(trained_text(tok, enc)) == "4<|im_end|>"
    ex, _ = parse_example({"text": "hello world"}, 1)
    enc = encode_example(tok, ex)
    assert all(enc.trained) and tok.decode(enc.input_ids) == "hello world<|im_end|>"
    ex, _ = parse_example({"input": {"messages": [{"role": "user", "content": "q"}]},
                           "preferred_output": [{"role": "assistant", "content": "good"}],
                           "non_preferred_output": [{"role": "assistant", "content": "bad"}]}, 1)
    chosen, rejected = encode_example(tok, ex)
    assert "".join(trained_text(tok, chosen)) == "good<|im_end|>"
    assert "".join(trained_text(tok, rejected)) == "bad<|im_end|>"


def test_template_without_end_of_turn_is_refused(tok):
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                         "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    tok.eos_token = "<|endoftext|>"
    with pytest.raises(TemplateError, match="learn to stop"):
        encode_chat(tok, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])


def test_preview_plain_brackets(tok):
    ex, _ = parse_example({"messages": [{"role": "user", "content": "hello"},
                                        {"role": "assistant", "content": "world"}]}, 1)
    (segs,) = example_segments(tok, ex)
    text = plain(segs)
    assert text.endswith("<|im_start|>assistant\n[[world<|im_end|>]]\n")
    assert text.count("[[") == 1


def test_preview_cli(home, tiny_model_template, tmp_path, capsys):
    from afinar.cli import main
    from afinar.models import Catalog

    Catalog().add("tiny", tiny_model_template)
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                    {"role": "assistant", "content": f"a{i}"}]})
                           for i in range(5)) + "\n")
    with pytest.raises(SystemExit) as e:
        main(["data", "preview", str(p), "-n", "2", "-m", "tiny", "--plain"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.count("--- line") == 2 and "[[a0<|im_end|>]]" in out and "[[a1<|im_end|>]]" in out


def test_validate_cli_exit_codes_and_json(home, tiny_model_template, tmp_path, capsys):
    from afinar.cli import main
    from afinar.models import Catalog

    Catalog().add("tiny", tiny_model_template)
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}]} for i in range(12)]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(map(json.dumps, rows)) + "\n")
    with pytest.raises(SystemExit) as e:
        main(["data", "validate", str(p), "-m", "tiny", "--json"])
    assert e.value.code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["max_seq_len"] == 256 and rep["stats"]["examples"] == 12
    p.write_text(p.read_text() + '{"messages": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(SystemExit) as e:
        main(["data", "validate", str(p), "-m", "tiny"])
    assert e.value.code == 1
    out = capsys.readouterr().out
    assert "unrecognized_role" in out and "13" in out and "messages[0].role" in out


def test_convert_csv_and_evals_rows(home, tmp_path, capsys):
    from afinar.cli import main
    from afinar.data.validate import validate_file

    csv = tmp_path / "qa.csv"
    csv.write_text("q,a\n" + "".join(f"question {i},answer {i}\n" for i in range(11))
                   + "empty,\n")
    out = tmp_path / "chat.jsonl"
    with pytest.raises(SystemExit) as e:
        main(["data", "convert", str(csv), "--out", str(out), "--system", "Be brief.",
              "--user-col", "q", "--assistant-col", "a"])
    assert e.value.code == 1  # one row skipped, and said so
    assert "line 13" in capsys.readouterr().err
    first = json.loads(out.read_text().splitlines()[0])
    assert first["messages"] == [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "question 0"},
                                 {"role": "assistant", "content": "answer 0"}]
    assert validate_file(out).ok
    ev = tmp_path / "ev.jsonl"
    ev.write_text("".join(json.dumps({"input": [{"role": "user", "content": f"q{i}"}],
                                      "ideal": f"a{i}"}) + "\n" for i in range(12)))
    out2 = tmp_path / "ev-chat.jsonl"
    with pytest.raises(SystemExit) as e:
        main(["data", "convert", str(ev), "--out", str(out2)])
    assert e.value.code == 0
    assert json.loads(out2.read_text().splitlines()[0])["messages"][-1] == {
        "role": "assistant", "content": "a0"}
