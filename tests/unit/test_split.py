"""Splits (deterministic, stratified, duplicates kept together) and leak checks between files."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from afinar.cli import main
from afinar.data.keys import exact_key, example_text, normalize
from afinar.data.leak import check_leak
from afinar.data.split import label_of, split_file
from afinar.errors import InvalidRequest
from tests.conftest import SHARED, needs_shared

SHARED_SARCASM = SHARED / "datasets" / "sarcasm"
SYSTEM = "You label customer messages: answer with one word saying whether the message is urgent."
WORDS = ("apple river stone cloud window garden pencil market engine silver ladder candle forest "
         "bridge harbor violin tunnel meadow rocket blanket castle desert island jacket kettle "
         "lantern mirror needle orchard pillow quartz saddle thunder umbrella valley wagon yacht "
         "zebra anchor basket canyon dolphin falcon glacier hammer igloo jungle koala").split()


def sentence(rng: random.Random, n: int = 20) -> str:
    return " ".join(rng.sample(WORDS, n))


def chat(user: str, answer: str, system: str | None = SYSTEM) -> dict:
    msgs = [{"role": "system", "content": system}] if system else []
    return {"messages": [*msgs, {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def unlabelled(n: int, seed: int = 0) -> list[dict]:
    """``n`` distinct examples whose answers are too long to be labels."""
    rng = random.Random(seed)
    return [chat(f"question {i}: {sentence(rng, 8)}", f"answer {i}: {sentence(rng, 10)}")
            for i in range(n)]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out, err = capsys.readouterr()
    return e.value.code or 0, out, " ".join(err.split())  # rich wraps long error lines


# ------------------------------------------------------------------------------ text and keys


def test_example_text_covers_every_format():
    tool_chat = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny.", "weight": 1}]}
    assert example_text(tool_chat) == ("user: weather in Paris?\n"
                                       "assistant: get_weather({\"city\": \"Paris\"})\n"
                                       "tool: sunny\nassistant: It is sunny.")
    assert example_text({"prompt": "2+2?", "completion": "4"}) == "user: 2+2?\nassistant: 4"
    pref = {"input": {"messages": [{"role": "user", "content": "hi"}]},
            "preferred_output": [{"role": "assistant", "content": "hello!"}],
            "non_preferred_output": [{"role": "assistant", "content": "go away"}]}
    assert example_text(pref) == "user: hi\npreferred_output: hello!\nnon_preferred_output: go away"
    assert example_text({"text": "raw text"}) == "raw text"


def test_contents_are_read_as_the_chat_templates_read_them(tmp_path):
    """One content_text for training and duplicate detection: text parts joined as the model sees
    them; rows read before validation (a number for a content, a part whose text is not a
    string) are keyed, not a crash."""
    parts = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "weather in "},
                                     {"type": "text", "text": "Paris?"}]},
        {"role": "assistant", "content": "sunny"}]}
    assert example_text(parts) == example_text(chat("weather in Paris?", "sunny", system=None))
    odd = [{"messages": [{"role": "user", "content": [{"type": "text", "text": 5}, "x"]},
                         {"role": "assistant", "content": "a"}]},
           {"messages": [{"role": "user", "content": 5},
                         {"role": "assistant", "content": {"x": 1}}]},
           {"prompt": "p", "completion": 7}]
    assert example_text(odd[0]) == "user: \nassistant: a"
    assert example_text(odd[1]) == 'user: 5\nassistant: {"x": 1}'
    assert label_of(odd[2]) == "7"
    summary = split_file(write(tmp_path / "odd.jsonl", odd + unlabelled(17)), tmp_path / "o")
    assert sum(summary.counts.values()) == 20


def test_exact_key_ignores_key_order_whitespace_and_weights():
    a = json.loads('{"messages": [{"role": "user", "content": "hi"}, '
                   '{"role": "assistant", "content": "yo", "weight": 1}]}')
    b = json.loads('{"messages":[{"content":"hi","role":"user"},'
                   '{"content":"yo","role":"assistant"}]}')
    assert exact_key(a) == exact_key(b)
    assert exact_key(a) != exact_key(chat("hi", "yo!", system=None))


def test_normalize_and_labels():
    assert normalize("Hello,  World!") == normalize("hello world") == "hello world"
    assert normalize("  Ça\tva?  ") == "ça va"
    assert label_of(chat("is this urgent?", " urgent ")) == "urgent"
    assert label_of({"prompt": "x", "completion": "not urgent at all"}) == "not urgent at all"
    assert label_of(chat("q", "this answer has far too many words to be a label")) is None
    assert label_of({"messages": [{"role": "user", "content": "only a question"}]}) is None
    assert label_of({"text": "no label"}) is None


# ----------------------------------------------------------------------------------- splitting


def test_split_is_deterministic_respects_fractions_and_keeps_bytes(tmp_path):
    rows = [json.dumps(r, ensure_ascii=False) for r in unlabelled(97)]
    rows += ['{"messages":[{"role":"user","content":"déjà vu"},{"content":"an answer that is long '
             'enough","role":"assistant"}]}',
             '{ "prompt" :  "spaced\\u0020out",   "completion": "longer, not a label at all" }',
             '{"messages": [{"role": "user", "content": "émoji 🎉"}, {"role": "assistant", '
             '"content": "still not a label, five words"}]}']
    src = write(tmp_path / "data.jsonl", rows)
    first = split_file(src, tmp_path / "a", seed=1)
    again = split_file(src, tmp_path / "b", seed=1)
    assert {**again.to_dict(), "paths": None} == {**first.to_dict(), "paths": None}
    other = split_file(src, tmp_path / "c", seed=2)
    assert first.counts == other.counts == {"train": 80, "val": 10, "test": 10}
    assert not first.stratified
    for s in ("train", "val", "test"):
        assert same_bytes(tmp_path / "a" / f"{s}.jsonl", tmp_path / "b" / f"{s}.jsonl")
        assert not same_bytes(tmp_path / "a" / f"{s}.jsonl", tmp_path / "c" / f"{s}.jsonl")
    written = [ln for s in ("train", "val", "test") for ln in lines(tmp_path / "a" / f"{s}.jsonl")]
    assert Counter(written) == Counter(r.encode() for r in rows)  # the user's bytes, each once
    train = lines(tmp_path / "a" / "train.jsonl")
    assert train == sorted(train, key=[r.encode() for r in rows].index)  # in input order


def test_stratification_keeps_label_proportions(tmp_path):
    rng = random.Random(5)
    rows = [chat(f"message {i}: {sentence(rng, 12)}", "1" if i % 10 < 7 else "0")
            for i in range(100)]
    summary = split_file(write(tmp_path / "labels.jsonl", rows), tmp_path / "out", seed=3)
    assert summary.stratified
    assert summary.labels == {"train": {"0": 24, "1": 56}, "val": {"0": 3, "1": 7},
                              "test": {"0": 3, "1": 7}}
    val = lines(tmp_path / "out" / "val.jsonl")
    assert Counter(json.loads(ln)["messages"][-1]["content"] for ln in val) == {"1": 7, "0": 3}
    flat = split_file(tmp_path / "labels.jsonl", tmp_path / "flat", seed=3, stratify="none")
    assert not flat.stratified and flat.labels == {} and flat.counts["val"] == 10


def test_tiny_classes_are_placed_deterministically(tmp_path):
    rows = [chat(f"item {i} {w}", w) for i, w in enumerate(WORDS[:12])]
    rows += [chat(f"bulk {i}", "common") for i in range(40)]
    src = write(tmp_path / "tiny.jsonl", rows)
    a, b = split_file(src, tmp_path / "a", seed=9), split_file(src, tmp_path / "b", seed=9)
    assert a.stratified and a.labels == b.labels
    assert a.counts == {"train": 42, "val": 5, "test": 5}
    assert same_bytes(tmp_path / "a" / "test.jsonl", tmp_path / "b" / "test.jsonl")


def test_duplicates_never_cross_splits(tmp_path):
    rows = [json.dumps(r) for r in unlabelled(90)]
    base = [json.loads(rows[i]) for i in (3, 10, 20, 30, 40)]
    for i, ex in enumerate(base):
        if i % 2 == 0:  # exact duplicate, written differently (key order, whitespace, weight)
            ex["messages"][-1]["weight"] = 1
            rows.append(json.dumps(ex, separators=(",", ":"), sort_keys=True))
        else:  # normalized duplicate: other case and punctuation
            ex["messages"][1]["content"] = ex["messages"][1]["content"].upper() + "!!"
            rows.append(json.dumps(ex))
    rows.append(rows[3])  # a third copy of the first group
    src = write(tmp_path / "dups.jsonl", rows)
    placed = set()
    for seed in range(8):
        summary = split_file(src, tmp_path / f"s{seed}", seed=seed)
        assert summary.duplicate_groups == 5 and summary.duplicate_rows == 6
        where = {ln: s for s in ("train", "val", "test")
                 for ln in lines(tmp_path / f"s{seed}" / f"{s}.jsonl")}
        for i, j in zip((3, 10, 20, 30, 40), range(90, 95), strict=True):
            assert where[rows[i].encode()] == where[rows[j].encode()]
            placed.add(where[rows[i].encode()])
    assert placed == {"train", "val", "test"}  # the groups did move between splits


def test_bad_fractions_and_outputs_are_refused(tmp_path):
    src = write(tmp_path / "d.jsonl", unlabelled(10))
    for val, test, param in ((-0.1, 0.1, "val"), (0.5, 0.5, "val"), (0.1, float("nan"), "test"),
                             (0.2, 0.9, "test")):
        with pytest.raises(InvalidRequest) as e:
            split_file(src, tmp_path / "o", val=val, test=test)
        assert e.value.param == param
    with pytest.raises(InvalidRequest, match="overwrite the input"):
        split_file(write(tmp_path / "train.jsonl", unlabelled(10)))
    summary = split_file(src, tmp_path / "o", val=0.2, test=0)
    assert summary.counts == {"train": 8, "val": 2, "test": 0} and "test" not in summary.paths
    assert not (tmp_path / "o" / "test.jsonl").exists()


def test_a_file_that_does_not_read_cleanly_is_not_split(tmp_path):
    rows = [json.dumps(r) for r in unlabelled(5)]
    rows.insert(2, '{"messages": [')
    with pytest.raises(InvalidRequest) as e:
        split_file(write(tmp_path / "bad.jsonl", rows), tmp_path / "out")
    assert "bad.jsonl" in e.value.message and "line 3" in e.value.message
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------- leak check


def test_check_leak_finds_exact_normalized_and_near_duplicates(tmp_path):
    rng = random.Random(11)
    train = [chat(sentence(rng), rng.choice(["urgent", "normal"])) for _ in range(60)]
    other = [chat(sentence(rng), "normal") for _ in range(30)]  # unrelated, same system prompt
    exact = json.loads(json.dumps(train[3]))
    exact["messages"][2]["weight"] = 1
    normalized = json.loads(json.dumps(train[5]))
    normalized["messages"][1]["content"] = normalized["messages"][1]["content"].title() + "?!"
    near = json.loads(json.dumps(train[7]))
    words = near["messages"][1]["content"].split()
    words[10] = "xylophone"  # one word of 20, in the middle
    near["messages"][1]["content"] = " ".join(words)
    other[4:4] = [json.dumps(exact, sort_keys=True, indent=None), normalized, near]
    report = check_leak(write(tmp_path / "train.jsonl", train),
                        write(tmp_path / "other.jsonl", other))
    assert report.counts == {"exact": 1, "normalized": 1, "near": 1}
    found = {(p.kind, p.train_line, p.other_line) for p in report.pairs}
    assert found == {("exact", 4, 5), ("normalized", 6, 6), ("near", 8, 7)}
    assert 0.8 <= next(p.similarity for p in report.pairs if p.kind == "near") < 1
    assert report.other_examples == 33 and report.leaked_fraction == pytest.approx(3 / 33)
    assert report.to_dict()["counts"]["near"] == 1
    strict = check_leak(tmp_path / "train.jsonl", tmp_path / "other.jsonl", threshold=0.95)
    assert strict.counts["near"] == 0


def test_check_leak_on_small_files_and_bad_threshold(tmp_path):
    rng = random.Random(2)
    text = sentence(rng, 20)
    changed = text.split()
    changed[9] = "xylophone"
    train = write(tmp_path / "t.jsonl", [{"text": text}, {"text": sentence(rng, 20)}])
    other = write(tmp_path / "o.jsonl", [{"text": " ".join(changed)}, {"text": sentence(rng, 20)}])
    report = check_leak(train, other)
    assert [(p.kind, p.train_line, p.other_line) for p in report.pairs] == [("near", 1, 1)]
    with pytest.raises(InvalidRequest) as e:
        check_leak(train, other, threshold=0)
    assert e.value.param == "threshold"


@needs_shared("datasets/sarcasm/train.jsonl")
def test_sarcasm_train_and_test_do_not_share_exact_examples(tmp_path):
    with open(SHARED_SARCASM / "train.jsonl", "rb") as f:
        head = b"".join(next(f) for _ in range(3000))
    (tmp_path / "train.jsonl").write_bytes(head)
    report = check_leak(tmp_path / "train.jsonl", SHARED_SARCASM / "test.jsonl")
    assert report.train_examples == 3000 and report.counts["exact"] == 0


# ------------------------------------------------------------------------------------------ CLI


def test_cli_split_and_check_leak(tmp_path, capsys):
    rng = random.Random(4)
    src = write(tmp_path / "data.jsonl",
                [chat(sentence(rng, 12), "1" if i % 10 < 7 else "0") for i in range(50)])
    code, out, _ = run(capsys, "data", "split", str(src), "--seed", "7")
    assert code == 0 and "train" in out and "40" in out and "label" in out
    assert {p.name for p in tmp_path.iterdir()} == {"data.jsonl", "train.jsonl", "val.jsonl",
                                                    "test.jsonl"}
    code, out, _ = run(capsys, "data", "split", str(src), "--out", str(tmp_path / "j"),
                       "--test", "0", "--no-stratify", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["counts"] == {"train": 45, "val": 5, "test": 0}
    assert not summary["stratified"]

    code, out, _ = run(capsys, "data", "check-leak", str(tmp_path / "train.jsonl"),
                       str(tmp_path / "test.jsonl"))
    assert code == 0 and "0 leaked" in out
    code, out, _ = run(capsys, "data", "check-leak", str(src), str(tmp_path / "test.jsonl"),
                       "--max-show", "2")
    assert code == 1 and "5 exact" in out and "and 3 more" in out
    code, out, _ = run(capsys, "data", "check-leak", str(src), str(tmp_path / "val.jsonl"),
                       "--json")
    assert code == 1 and json.loads(out)["counts"]["exact"] == 5

    code, _, err = run(capsys, "data", "split", str(src), "--val", "0.7", "--test", "0.3")
    assert code == 2 and "val + test must be below 1" in err
    code, _, err = run(capsys, "data", "check-leak", str(src), str(tmp_path / "missing.jsonl"))
    assert code == 2 and "no such file" in err
