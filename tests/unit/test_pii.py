import json
import time

import pytest

from afinar.cli import main
from afinar.data.issues import Issue
from afinar.data.pii import (
    DETECTORS,
    Finding,
    Redactor,
    mask,
    redact_file,
    scan_file,
    scan_text,
    scan_value,
)
from afinar.errors import InvalidRequest, NotFound

RANDOM_KEY = "Xy7kP9mQ2rT5vW8zA3bC6dE1fG4hJ0nL"
OPENAI_KEY = "sk-proj-abcDEF123456ghiJKL789012mno"
GOOGLE_KEY = "AIzaSyA1234567890abcdefghijklmnopqrstuv"

# (kind, text, the value that must be found)
POSITIVES = [
    ("EMAIL", "write to john.doe@example.com today", "john.doe@example.com"),
    ("EMAIL", "<a+tag@mail.example.co.uk>", "a+tag@mail.example.co.uk"),
    ("EMAIL", "john.5551234567@example.com", "john.5551234567@example.com"),
    ("PHONE", "call +44 20 7946 0958 now", "+44 20 7946 0958"),
    ("PHONE", "call +1 (555) 123-4567", "+1 (555) 123-4567"),
    ("PHONE", "office (555) 123-4567.", "(555) 123-4567"),
    ("PHONE", "cell 555.123.4567", "555.123.4567"),
    ("PHONE", "ring 020 7946 0958", "020 7946 0958"),
    ("PHONE", "tél 01 23 45 67 89", "01 23 45 67 89"),
    ("PHONE", "mobil +4915112345678", "+4915112345678"),
    ("CREDIT_CARD", "card 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "mc 5500-0000-0000-0004", "5500-0000-0000-0004"),
    ("CREDIT_CARD", "amex 378282246310005", "378282246310005"),
    ("CREDIT_CARD", "in 2023 4111 1111 1111 1111 12", "4111 1111 1111 1111"),
    ("IBAN", "IBAN GB82 WEST 1234 5698 7654 32 please", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN", "to DE89 3704 0044 0532 0130 00 THANKS", "DE89 3704 0044 0532 0130 00"),
    ("IBAN", "NL91ABNA0417164300", "NL91ABNA0417164300"),
    ("IPV4", "from 192.168.1.20:8080", "192.168.1.20"),
    ("IPV4", "dns 8.8.8.8.", "8.8.8.8"),
    ("IPV6", "host 2001:db8::8a2e:370:7334 up", "2001:db8::8a2e:370:7334"),
    ("IPV6", "mapped ::ffff:192.0.2.1", "::ffff:192.0.2.1"),
    ("IPV6", "link fe80::1ff:fe23:4567:890a%eth0", "fe80::1ff:fe23:4567:890a%eth0"),
    ("API_KEY", f"OPENAI_KEY {OPENAI_KEY}", OPENAI_KEY),
    ("API_KEY", "aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("API_KEY", "gh ghp_" + "a1B2" * 9, "ghp_" + "a1B2" * 9),
    ("API_KEY", "slack xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
    ("API_KEY", f"google {GOOGLE_KEY}", GOOGLE_KEY),
    ("API_KEY", "hf hf_" + "aB3" * 12, "hf_" + "aB3" * 12),
    ("API_KEY", f"header {RANDOM_KEY} end", RANDOM_KEY),
    ("API_KEY", f'api_key="{RANDOM_KEY}"', RANDOM_KEY),
    ("API_KEY", f"https://x.io/cb?sig={RANDOM_KEY}&x=1", RANDOM_KEY),
    ("PASSWORD", "password: hunter2", "hunter2"),
    ("PASSWORD", "login with pwd=s3cr3t! and go", "s3cr3t!"),
    ("PASSWORD", "DB_PASSWORD='correcthorse'", "correcthorse"),
    ("PASSWORD", '{"passwd": "tr0ub4dor"}', "tr0ub4dor"),
    ("PASSWORD", "secret=abc123xyz789", "abc123xyz789"),
    ("PASSWORD", "my password: hunter2.", "hunter2"),
]

# (kind that must NOT be found, text)
NEGATIVES = [
    ("EMAIL", "user@localhost"),
    ("EMAIL", "follow @example on x.com"),
    ("PHONE", "on 2024-01-15 we shipped"),
    ("PHONE", "in 2024 and 1999"),
    ("PHONE", "version 1.2.3 and v10.20.30"),
    ("PHONE", "order 12345678"),
    ("PHONE", "at 1705312345 (unix time)"),
    ("PHONE", "on 15.01.2024"),
    ("PHONE", "pi is 3.14159265358"),
    ("CREDIT_CARD", "card 4111 1111 1111 1112"),
    ("CREDIT_CARD", "ts 1705312345678 ms"),
    ("CREDIT_CARD", "zeros 0000 0000 0000 0000"),
    ("IBAN", "GB83 WEST 1234 5698 7654 32"),
    ("IBAN", "DE88 3704 0044 0532 0130 00"),
    ("IPV4", "999.1.1.1"),
    ("IPV4", "release 1.2.3.4.5"),
    ("IPV4", "01.02.03.04"),
    ("IPV4", "listening on 0.0.0.0:80 and 127.0.0.1, netmask 255.255.255.0"),
    ("IPV6", "localhost is ::1"),
    ("IPV6", "at 12:30:45"),
    ("IPV6", "std::vector<int> and a::b"),
    ("API_KEY", "sha fe7fb36a45632568fd38e88111b5c8d5e3b0c44298fc1c149afbf4c8996fb924"),
    ("API_KEY", "id 550e8400-e29b-41d4-a716-446655440000"),
    ("API_KEY", "MyVeryLongClassNameForTesting2024Edition"),
    ("API_KEY", "/home/user/projects/my_project_2024/src/main_v2"),
    ("API_KEY", "sk-short"),
    ("API_KEY", "https://github.com/org/repo/commit/3f2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a"),
    ("API_KEY", "integrity sha512-Ka0rn0QZxWbq9wX5m7U9yVn9N1i1Qm0zk+D8bX3qW6o7R4mL0N6p2s8c=="),
    ("PASSWORD", "password: str"),
    ("PASSWORD", "the pad token = eos"),
    ("PASSWORD", "password: <PASSWORD_1>"),
    ("PASSWORD", "password = ${DB_PASSWORD}"),
    ("PASSWORD", "password: ********"),
]


@pytest.mark.parametrize(("kind", "text", "value"), POSITIVES)
def test_detects(kind, text, value):
    found = [(f.kind, f.value) for f in scan_text(text)]
    assert (kind, value) in found
    f = next(f for f in scan_text(text) if f.value == value)
    assert text[f.start:f.end] == value


@pytest.mark.parametrize(("kind", "text"), NEGATIVES)
def test_does_not_detect(kind, text):
    assert kind not in {f.kind for f in scan_text(text)}


def test_every_detector_has_a_positive_example():
    kinds = {kind for kind, _, _ in POSITIVES}
    assert {d.kind for d in DETECTORS} <= kinds


def test_overlaps_keep_the_longer_finding():
    assert [f.kind for f in scan_text("john.5551234567@example.com")] == ["EMAIL"]
    assert [f.kind for f in scan_text("4111 1111 1111 1111")] == ["CREDIT_CARD"]
    assert [f.kind for f in scan_text("::ffff:192.0.2.1")] == ["IPV6"]
    text = "a@x.com, +44 20 7946 0958 and 10.0.0.1"
    assert [f.kind for f in scan_text(text)] == ["EMAIL", "PHONE", "IPV4"]


def test_private_key_block():
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAKC\n-----END RSA PRIVATE KEY-----"
    [f] = scan_text(f"key:\n{key}\n")
    assert f.kind == "API_KEY" and f.value == key and mask(f.kind, f.value).endswith("***")


@pytest.mark.parametrize(("kind", "value", "preview"), [
    ("EMAIL", "john@example.com", "j***@example.com"),
    ("CREDIT_CARD", "4111 1111 1111 1111", "***1111"),
    ("IBAN", "GB82 WEST 1234 5698 7654 32", "GB***32"),
    ("PHONE", "+44 20 7946 0958", "***58"),
    ("IPV4", "192.168.1.20", "192***"),
    ("API_KEY", OPENAI_KEY, "sk-proj-***"),
    ("PASSWORD", "hunter2", "***"),
])
def test_mask_never_shows_the_value(kind, value, preview):
    assert mask(kind, value) == preview


def test_scan_value_paths_and_keys():
    row = {"messages": [{"role": "system", "content": "be nice"},
                        {"role": "user", "content": "I am a@x.com, ip 10.0.0.1"}],
           "b@y.org": "keys are not scanned", "n": 5551234567, "password": "hunter2"}
    found = [(f.field, f.kind, f.value) for f in scan_value(row)]
    assert found == [("messages[1].content", "EMAIL", "a@x.com"),
                     ("messages[1].content", "IPV4", "10.0.0.1"),
                     ("password", "PASSWORD", "hunter2")]
    assert list(scan_value({"token": "the"})) == []  # a tokenizer dataset, not a credential


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _msgs(text):
    return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}],
            "weight": 1, "meta": {"ok": True, "none": None}}


def test_scan_file_lines_and_issues(tmp_path):
    src = _write(tmp_path / "d.jsonl", [_msgs("a@x.com"), "{broken", _msgs("nothing"),
                                        _msgs("call +44 20 7946 0958")])
    items = list(scan_file(src))
    assert [(i.line, i.kind) for i in items if isinstance(i, Finding)] == [(1, "EMAIL"),
                                                                           (4, "PHONE")]
    assert [(i.line, i.code) for i in items if isinstance(i, Issue)] == [(2, "invalid_json")]
    txt = tmp_path / "notes.md"
    txt.write_text("# notes\n\nmail a@x.com\nand b@y.org\n")
    assert [(f.line, f.value) for f in scan_file(txt)] == [(3, "a@x.com"), (4, "b@y.org")]


def test_unreadable_files_raise(tmp_path):
    with pytest.raises(NotFound):
        list(scan_file(tmp_path / "missing.jsonl"))
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b'{"a": 1}\n\x00\x01\x02\n')
    with pytest.raises(InvalidRequest, match="binary_file"):
        list(scan_file(binary))
    with pytest.raises(InvalidRequest):
        redact_file(binary, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_redaction_is_consistent_per_value_across_the_file(tmp_path):
    src = _write(tmp_path / "d.jsonl", [_msgs("I am a@x.com"), _msgs("write b@y.org or a@x.com"),
                                        _msgs("again a@x.com, card 4111 1111 1111 1111")])
    red = Redactor()
    summary = redact_file(src, tmp_path / "out" / "clean.jsonl", red)
    rows = [json.loads(line) for line in summary.dst.read_text().splitlines()]
    assert [r["messages"][0]["content"] for r in rows] == [
        "I am <EMAIL_1>", "write <EMAIL_2> or <EMAIL_1>", "again <EMAIL_1>, card <CREDIT_CARD_1>"]
    assert summary.examples == 3 and summary.skipped_lines == []
    assert summary.counts == {"EMAIL": 4, "CREDIT_CARD": 1}
    assert summary.distinct == {"EMAIL": 2, "CREDIT_CARD": 1}
    assert red.mapping == {"<EMAIL_1>": "a@x.com", "<EMAIL_2>": "b@y.org",
                           "<CREDIT_CARD_1>": "4111 1111 1111 1111"}
    assert list(scan_file(summary.dst)) == []  # nothing left to find
    assert not list(tmp_path.glob("out/.*.tmp"))


def test_redact_value_touches_only_string_values():
    row = {"a@x.com": [1, 2.5, None, True], "messages": [{"role": "user", "content": "a@x.com"}],
           "db_password": "hunter2", "nested": {"ip": ["10.0.0.1", 10]}}
    out = Redactor().redact_value(row)
    assert out == {"a@x.com": [1, 2.5, None, True],
                   "messages": [{"role": "user", "content": "<EMAIL_1>"}],
                   "db_password": "<PASSWORD_1>", "nested": {"ip": ["<IPV4_1>", 10]}}
    assert list(scan_value(out)) == []
    assert row["messages"][0]["content"] == "a@x.com"  # the input is not modified


def test_redact_refuses_to_overwrite_its_input(tmp_path):
    src = _write(tmp_path / "d.jsonl", [_msgs("a@x.com")])
    before = src.read_bytes()
    with pytest.raises(InvalidRequest, match="refusing"):
        redact_file(src, tmp_path / "." / "d.jsonl")
    (tmp_path / "link.jsonl").symlink_to(src)
    with pytest.raises(InvalidRequest):
        redact_file(src, tmp_path / "link.jsonl")
    assert src.read_bytes() == before


def test_redact_skips_and_reports_unreadable_lines(tmp_path):
    src = _write(tmp_path / "d.jsonl", [_msgs("a@x.com"), "{not json", _msgs("fine")])
    summary = redact_file(src, tmp_path / "out.jsonl")
    assert summary.examples == 2 and summary.skipped_lines == [2]
    assert summary.issues[0].code == "invalid_json"
    assert len(summary.dst.read_text().splitlines()) == 2


def test_scanning_is_fast_on_long_text():
    text = ("Lorem ipsum 2024-01-15 v1.2.3 a_b_c " * 2000 + "iVBORw0KGgo" * 5000
            + " 1234567890" * 2000 + " mail a@x.com")
    t0 = time.perf_counter()
    found = scan_text(text)
    assert time.perf_counter() - t0 < 2.0
    assert ("EMAIL", "a@x.com") in [(f.kind, f.value) for f in found]


def run(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err


def test_cli_clean_file_exits_0(tmp_path, capsys):
    src = _write(tmp_path / "d.jsonl", [_msgs("hello"), _msgs("version 1.2.3 on 2024-01-15")])
    code, out, _ = run(capsys, "data", "pii", str(src), "--json")
    assert code == 0 and json.loads(out)["counts"] == {}
    code, out, _ = run(capsys, "data", "pii", str(src))
    assert code == 0 and "no PII found" in out


def test_cli_findings_exit_1_and_are_masked(tmp_path, capsys):
    src = _write(tmp_path / "d.jsonl", [_msgs("I am john@example.com"), _msgs("password: hunter2"),
                                        _msgs("card 4111 1111 1111 1111")])
    code, out, _ = run(capsys, "data", "pii", str(src), "--json")
    report = json.loads(out)
    assert code == 1
    assert report["counts"] == {"EMAIL": 1, "PASSWORD": 1, "CREDIT_CARD": 1}
    assert [(f["line"], f["field"], f["kind"], f["value"]) for f in report["findings"]] == [
        (1, "messages[0].content", "EMAIL", "j***@example.com"),
        (2, "messages[0].content", "PASSWORD", "***"),
        (3, "messages[0].content", "CREDIT_CARD", "***1111")]
    code, out, _ = run(capsys, "data", "pii", str(src), "--max-show", "1")
    assert code == 1 and "j***@example.com" in out and "2 more not listed" in out
    assert "EMAIL 1" in out
    for secret in ("john@example.com", "hunter2", "4111 1111"):
        assert secret not in out


def test_cli_redact_and_errors(tmp_path, capsys):
    src = _write(tmp_path / "d.jsonl", [_msgs("I am john@example.com"), "{oops"])
    dst = tmp_path / "clean.jsonl"
    code, out, err = run(capsys, "data", "pii", str(src), "--redact", str(dst))
    assert code == 0 and str(dst) in out and "EMAIL 1" in out and "line 2" in err
    assert "<EMAIL_1>" in dst.read_text() and "john@" not in dst.read_text()
    code, _, err = run(capsys, "data", "pii", str(dst))  # clean, but line 2 was never read
    assert code == 0
    code, _, err = run(capsys, "data", "pii", str(src), "--json")
    assert code == 1
    bad = _write(tmp_path / "bad.jsonl", [_msgs("nothing here"), "{oops"])
    code, _, err = run(capsys, "data", "pii", str(bad))
    assert code == 2 and "could not be read" in " ".join(err.split())
    code, _, err = run(capsys, "data", "pii", str(tmp_path / "missing.jsonl"))
    assert code == 2
    code, _, err = run(capsys, "data", "pii", str(src), "--redact", str(src))
    assert code == 2 and "refusing" in err
