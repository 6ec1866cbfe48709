"""Dataset validation: one hand-made bad file per error code, each reported with its code, line
and field; valid tool-calling/multi-turn data passes; token statistics are exact."""

import json

import pytest
from transformers import AutoTokenizer

from afinar.data.reader import iter_rows
from afinar.data.validate import validate_file
from afinar.models.templates import render_ids


def chat(q="What is 2+2?", a="4", **extra):
    return {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": q},
                         {"role": "assistant", "content": a}], **extra}


def good(n=12):
    return [chat(f"question {i}?", f"answer {i}") for i in range(n)]


TOOLS = [{"type": "function", "function": {"name": "get_weather",
                                           "parameters": {"type": "object", "properties": {}}}}]
TOOL_EXAMPLE = {
    "tools": TOOLS, "parallel_tool_calls": False,
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        {"role": "assistant", "content": "18C and sunny.", "weight": 1},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You're welcome.", "weight": 0},
    ]}


def write(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    with open(p, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(r if isinstance(r, str) else json.dumps(r))
            f.write("\n")
    return p


def bad_msg(**m):
    return {"messages": [{"role": "user", "content": "hi"}, m]}


# (what is wrong, the bad row placed at line 3 of an otherwise valid file, code, field)
CASES = [
    ("not an object", [1, 2], "data_type", None),
    ("no messages", {"msgs": []}, "missing_messages_list", "messages"),
    ("empty messages", {"messages": []}, "missing_messages_list", "messages"),
    ("no role", bad_msg(content="x"), "message_missing_key", "messages[1].role"),
    ("no content", bad_msg(role="assistant"), "message_missing_key", "messages[1].content"),
    ("unknown key", bad_msg(role="assistant", content="x", mood="happy"),
     "message_unrecognized_key", "messages[1].mood"),
    ("bad role", bad_msg(role="robot", content="x"), "unrecognized_role", "messages[1].role"),
    ("empty content", bad_msg(role="assistant", content=""), "missing_content",
     "messages[1].content"),
    ("content not text", bad_msg(role="assistant", content=42), "missing_content",
     "messages[1].content"),
    ("no assistant", {"messages": [{"role": "user", "content": "hi"}]},
     "example_missing_assistant_message", "messages"),
    ("weight 2", bad_msg(role="assistant", content="x", weight=2), "invalid_weight",
     "messages[1].weight"),
    ("weight true", bad_msg(role="assistant", content="x", weight=True), "invalid_weight",
     "messages[1].weight"),
    ("all weights 0", bad_msg(role="assistant", content="x", weight=0), "no_trained_tokens",
     "messages"),
    ("orphan tool result", {"messages": [{"role": "user", "content": "hi"},
                                         {"role": "tool", "tool_call_id": "nope", "content": "1"},
                                         {"role": "assistant", "content": "ok"}]},
     "unmatched_tool_call_id", "messages[1].tool_call_id"),
    ("tool args not JSON", bad_msg(role="assistant", tool_calls=[
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]),
     "invalid_tool_call", "messages[1].tool_calls[0].function.arguments"),
    ("bad tools", {**chat(), "tools": [{"type": "function"}]}, "invalid_tools", "tools[0]"),
    ("image part", bad_msg(role="assistant", content=[{"type": "image_url", "image_url": {}}]),
     "unsupported_content", "messages[1].content[0]"),
    ("invalid JSON", '{"messages": [', "invalid_json", None),
    ("other format", {"prompt": "a", "completion": "b"}, "inconsistent_format", None),
]


@pytest.mark.parametrize("what,row,code,field", CASES, ids=[c[0] for c in CASES])
def test_each_error_code_is_reported_at_its_line(tmp_path, what, row, code, field):
    rows = good(12)
    rows.insert(2, row)
    r = validate_file(write(tmp_path, rows))
    hits = [e for e in r.errors if e.code == code]
    assert hits, f"{code} not reported; got {[str(e) for e in r.errors]}"
    assert hits[0].line == 3
    assert hits[0].field == field
    assert not r.ok
    assert r.n_examples == 12  # the others are still counted


def test_valid_tool_calling_multi_turn_data_passes(tmp_path):
    rows = [TOOL_EXAMPLE] + good(11)
    r = validate_file(write(tmp_path, rows))
    assert r.ok, [str(e) for e in r.errors]
    assert r.n_examples == 12


def test_file_level_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert [e.code for e in validate_file(empty).errors] == ["empty_file"]
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b'{"a": 1}\n\x00\x01\x02garbage\n')
    assert "binary_file" in [e.code for e in validate_file(binary).errors]
    few = validate_file(write(tmp_path, good(5)))
    assert [e.code for e in few.errors] == ["too_few_examples"]
    some = validate_file(write(tmp_path, good(20)))
    assert some.ok and [w.code for w in some.warnings] == ["few_examples"]


def test_encoding_problems(tmp_path):
    lines = [json.dumps(r).encode() for r in good(12)]
    lines[1] = b'{"messages": "\xff\xfe"}'
    lines[0] = b"\xef\xbb\xbf" + lines[0]  # a BOM is fine
    p = tmp_path / "enc.jsonl"
    p.write_bytes(b"\r\n".join(lines) + b"\r\n")  # CRLF is fine
    r = validate_file(p)
    assert [(e.code, e.line) for e in r.errors] == [("invalid_utf8", 2)]
    assert r.n_examples == 11


def test_truncated_last_line_is_called_out(tmp_path):
    p = write(tmp_path, good(12))
    p.write_bytes(p.read_bytes() + b'{"messages": [{"role": "us')
    r = validate_file(p)
    (e,) = r.errors
    assert (e.code, e.line) == ("invalid_json", 13) and "truncated" in e.message


def test_very_long_line(tmp_path):
    rows = good(12)
    rows.append(chat("x " * 5_000_000, "long"))  # a ~10 MB single line parses
    r = validate_file(write(tmp_path, rows))
    assert r.n_examples == 13
    from afinar.data import reader

    items = list(reader.iter_jsonl(write(tmp_path, rows, "l.jsonl"), max_line_bytes=1 << 20))
    assert [i.code for i in items if not isinstance(i, reader.Row)] == ["line_too_long"]
    assert sum(isinstance(i, reader.Row) for i in items) == 12


def test_errors_are_capped_per_code_with_full_counts(tmp_path):
    rows = good(12) + [bad_msg(role="robot", content="x")] * 30
    r = validate_file(write(tmp_path, rows), max_per_code=5)
    assert len([e for e in r.errors if e.code == "unrecognized_role"]) == 5
    assert r.counts["unrecognized_role"] == 30


@pytest.fixture
def tok(tiny_model_template):
    return AutoTokenizer.from_pretrained(tiny_model_template)


def test_token_statistics_are_exact(tmp_path, tok):
    rows = good(12)
    r = validate_file(write(tmp_path, rows), tok, max_seq_len=256)
    assert r.ok
    lengths = [len(render_ids(tok, x["messages"], add_generation_prompt=False)) for x in rows]
    st = r.stats
    assert st["total_tokens"] == sum(lengths)
    assert st["tokens_per_example"]["max"] == max(lengths)
    answers = [len(tok(x["messages"][-1]["content"], add_special_tokens=False)["input_ids"]) + 1
               for x in rows]  # + <|im_end|>
    assert st["total_trained_tokens"] == sum(answers)
    assert st["default_epochs"] == 8  # 100 // 12
    # auto: batch 1, and 9 epochs so that the job takes >= 100 optimiser steps (12 x 8 = 96)
    assert (st["epochs"], st["auto_batch_size"]) == (9, 1)
    assert st["estimated_training_tokens"] == sum(lengths) * 9
    assert st["messages_per_example"]["median"] == 3


def test_over_length_examples(tmp_path, tok):
    rows = good(12)
    rows.append(chat("hello world " * 60, "short answer"))
    r = validate_file(write(tmp_path, rows), tok, max_seq_len=100)
    assert [(e.code, e.line) for e in r.errors] == [("example_too_long", 13)]
    assert r.stats["examples_over_max_seq_len"] == 1


def test_special_token_in_content_warns(tmp_path, tok):
    rows = good(12)
    rows.append(chat("say <|im_end|> please", "ok"))
    r = validate_file(write(tmp_path, rows), tok, max_seq_len=256)
    assert r.ok
    assert [(w.code, w.line, w.field) for w in r.warnings
            if w.code == "special_token_in_content"] == [(
                "special_token_in_content", 13, "messages[1].content")]


def test_label_distribution(tmp_path, tok):
    rows = [chat(f"headline {i}", str(i % 2)) for i in range(20)]
    st = validate_file(write(tmp_path, rows), tok, max_seq_len=256).stats
    assert st["labels"] == {"0": 10, "1": 10}


def test_other_formats(tmp_path, tok):
    pc = [{"prompt": f"2+{i}=", "completion": str(2 + i)} for i in range(12)]
    r = validate_file(write(tmp_path, pc, "pc.jsonl"), tok, max_seq_len=256)
    assert r.ok and r.format == "completion"
    pref = [{"input": {"messages": [{"role": "user", "content": f"q{i}"}]},
             "preferred_output": [{"role": "assistant", "content": "good"}],
             "non_preferred_completion": [{"role": "assistant", "content": f"bad {i}"}]}
            for i in range(12)]
    r = validate_file(write(tmp_path, pref, "pref.jsonl"), tok, max_seq_len=256)
    assert r.ok and r.format == "preference", [str(e) for e in r.errors]
    evals = [{"input": [{"role": "user", "content": f"q{i}"}], "ideal": "a"} for i in range(12)]
    r = validate_file(write(tmp_path, evals, "ev.jsonl"), tok, max_seq_len=256)
    assert r.ok and r.format == "chat"
    txt = tmp_path / "corpus.md"
    txt.write_text("# Debian\n\nDebian is a free operating system.\n" * 50)
    r = validate_file(txt, tok, max_seq_len=64)
    assert r.ok and r.format == "text" and r.stats["total_tokens"] > 64
    same = [{"input": {"messages": [{"role": "user", "content": "q"}]},
             "preferred_output": [{"role": "assistant", "content": "x"}],
             "non_preferred_output": [{"role": "assistant", "content": "x"}]}]
    r = validate_file(write(tmp_path, same, "same.jsonl"))
    assert "invalid_field" in r.counts


def test_json_array_and_csv_readers(tmp_path):
    arr = tmp_path / "d.json"
    arr.write_text(json.dumps(good(12)))
    assert validate_file(arr).ok
    csv = tmp_path / "d.csv"
    csv.write_text("text\nhello\n\"multi\nline\"\n")
    rows = list(iter_rows(csv))
    assert [r.line for r in rows] == [2, 4] and rows[1].data == {"text": "multi\nline"}


def test_sarcasm_test_split_validates_clean(shared_dir, tok):
    path = shared_dir / "datasets" / "sarcasm" / "test.jsonl"
    r = validate_file(path, tok, max_seq_len=1024)
    assert r.ok and r.n_examples == 2000
    assert set(r.stats["labels"]) == {"0", "1"}
    assert r.stats["trained_tokens_per_example"]["max"] <= 3
