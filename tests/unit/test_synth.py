"""``afinar data synth`` on the tiny random model and a tiny knowledge base built here: validated
JSONL in both styles with the report's counts adding up, raft prompts that are the
``fine_tuned_rag`` strategy's own prompt for the same sources, the support filter (on fixed texts,
and consistent with what a random model writes), the leak check against a test file, and
``--as-eval`` files that the evaluation reads."""

from __future__ import annotations

import json

import pytest

from afinar.data.minhash import near_duplicates
from afinar.data.validate import validate_file
from afinar.errors import InvalidRequest
from afinar.rag.kb import KnowledgeBases
from afinar.rag.synth import (NOT_IN_SOURCES, REASONS, Synthesizer, answer_support, duplicates,
                              synthesize)
from tests.helpers import run_cli

PAGES = {
    "acme-x1.md": "# Acme X1 router\n\nThe Acme X1 router is covered by a limited warranty of 24 "
                  "months from the date of purchase. The warranty covers hardware faults but not "
                  "damage from lightning or liquids.\n",
    "acme-m2.md": "# Acme M2 mesh\n\nTo restore the factory settings of the M2 mesh system, hold "
                  "the reset button for 12 seconds until the status light blinks amber, then "
                  "wait two minutes.\n",
    "acme-c5.md": "# Acme C5 modem\n\nOpen the C5 admin page at 192.168.8.1 in a browser and "
                  "sign in with the password printed on the label under the device.\n",
    "acme-p7.md": "# Acme P7 router\n\nThe P7 needs a 19 V power adapter. Acme sells spare "
                  "adapters for the P7 in its online shop, with a two year guarantee.\n",
}
SMALL = {"max_question_chars": 40, "max_answer_chars": 60}  # short random replies: quick tests


@pytest.fixture
def kb(tiny_long, tmp_path):
    folder = tmp_path / "pages"
    folder.mkdir()
    for name, text in PAGES.items():
        (folder / name).write_text(text)
    kbs = KnowledgeBases()
    kbs.create("acme")
    kbs.add("acme", [folder])
    return kbs


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def adds_up(report) -> None:
    assert report.generated == len(report.kept) + sum(report.dropped.values())
    assert set(report.dropped) <= set(REASONS)


# -- the support filter on fixed texts ---------------------------------------------------------
CHUNK = ("Acme X1 router > Warranty\nThe Acme X1 is covered by a limited warranty of 24 months "
         "from the date of purchase.")


def test_support_filter_on_fixed_texts():
    hp = ["Acme X1 router", "Warranty"]
    assert answer_support("The X1 has a limited warranty of 24 months.", CHUNK, hp) >= 0.5
    assert answer_support("It is painted violet and sings opera.", CHUNK, hp) == 0.0
    # repeating the heading path is not support (the grounded answers' rule)
    assert answer_support("Acme X1 router warranty.", "Acme X1 router > Warranty\nIt lasts.",
                          hp) < 0.5
    # every sentence must be supported: one invented sentence sinks the answer
    two = "The warranty lasts 24 months. Lightning damage is refunded twice."
    assert answer_support(two, CHUNK, hp) < 0.5
    assert answer_support("", CHUNK, hp) == 0.0


def test_duplicates_exact_normalized_and_near():
    qs = ["How long is the warranty of the Acme X1 router?",
          "how long is the warranty of the acme x1 router",  # normalized repeat
          "What voltage does the P7 power adapter need?",
          "How long is the warranty of the Acme X1 router today?",  # near (Jaccard >= 0.8)
          "Which address opens the C5 admin page?"]
    assert duplicates(qs, 0.8) == {1, 3}
    near = near_duplicates(qs, 0.8)
    assert [(j, i) for j, i, _ in near] == [(1, 0), (3, 0)]
    assert all(0.8 <= s <= 1 for _, _, s in near)


# -- the tiny random model --------------------------------------------------------------------
def test_qa_writes_validated_jsonl_and_the_counts_add_up(kb, tiny_long, tmp_path):
    out = tmp_path / "train.jsonl"
    report = synthesize("acme", tiny_long, out, n=14, min_support=0.0, seed=3, **SMALL)
    adds_up(report)
    assert report.generated == 14 and report.written, report.not_written
    assert validate_file(out, tiny_long.tokenizer).ok
    got = rows(out)
    assert len(got) == len(report.kept) >= 10
    for row, ex in zip(got, report.kept, strict=True):
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][0]["content"] == ex.question
        assert row["messages"][1]["content"] == ex.answer


def test_unsupported_answers_are_dropped_consistently(kb, tiny_long, tmp_path):
    """The same seeds write the same candidates; with the filter on, exactly those whose answer
    its chunk does not support are dropped (a random model's: all or nearly all)."""
    loose = synthesize("acme", tiny_long, tmp_path / "a.jsonl", n=8, min_support=0.0, seed=5,
                       **SMALL)
    chunk = {c.chunk_id: c for c in _chunks(kb)}

    def sup(e):
        return answer_support(e.answer, chunk[e.chunk_id].text, chunk[e.chunk_id].heading_path)

    weak = [e for e in loose.kept if sup(e) < 0.5]
    strict = synthesize("acme", tiny_long, tmp_path / "b.jsonl", n=8, seed=5, **SMALL)
    adds_up(strict)
    assert strict.dropped["unsupported"] >= len(weak) > 0
    assert all(sup(e) >= 0.5 for e in strict.kept)
    if not strict.kept:
        assert not strict.written and strict.not_written == "no example was kept"
        assert not (tmp_path / "b.jsonl").exists()


def _chunks(kbs):
    from afinar.rag.synth import chunk_pool

    return chunk_pool(kbs, "acme")[0]


def test_raft_prompts_are_the_fine_tuned_rag_strategys(kb, tiny_long, tmp_path):
    from afinar.evals.cases import Case
    from afinar.evals.strategies import Context, FineTunedRag, StrategySpec

    system = "You answer questions about Acme devices."
    out = tmp_path / "raft.jsonl"
    report = synthesize("acme", tiny_long, out, n=14, style="raft", k=3, absent_share=0.3,
                        system=system, min_support=0.0, seed=1, **SMALL)
    adds_up(report)
    assert report.written, report.not_written
    assert validate_file(out, tiny_long.tokenizer).ok
    kinds = report.kinds
    assert kinds["gold"] + kinds["absent"] == len(report.kept) == len(rows(out))
    assert kinds["gold"] and kinds["absent"]

    class Fixed(FineTunedRag):  # the strategy, shown the example's sources as its retrieval
        shown: list = []

        def retrieve(self, case):
            return [{"source": s, "text": t} for s, t in self.shown]

    spec = StrategySpec(type="fine_tuned_rag", model="tiny-long", knowledge_base="acme", k=3)
    strategy = Fixed(spec, Context(load=lambda m: tiny_long, default_model="tiny-long"))
    for ex, row in zip(report.kept, rows(out), strict=True):
        assert row["messages"] == ex.messages
        strategy.shown = ex.sources
        case = Case("c", 1, [{"role": "system", "content": system},
                             {"role": "user", "content": ex.question}], ex.answer)
        prompt, _ = strategy.prompt(case)
        assert ex.messages[:-1] == prompt
        assert len(ex.sources) == 3
        if ex.kind == "gold":
            assert ex.chunk_id in ex.source_chunks and ex.answer != NOT_IN_SOURCES
        else:
            assert ex.chunk_id not in ex.source_chunks and ex.answer == NOT_IN_SOURCES
            assert ex.messages[-1]["content"] == NOT_IN_SOURCES


def test_leak_check_drops_test_set_questions(kb, tiny_long, tmp_path):
    first = synthesize("acme", tiny_long, tmp_path / "a.jsonl", n=12, min_support=0.0, seed=7,
                       **SMALL)
    assert first.dropped["leak"] == 0 and len(first.kept) >= 3
    taken = [e.question for e in first.kept[:3]]
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": q},
        {"role": "assistant", "content": "a reference answer"}]}) + "\n" for q in taken))
    again = synthesize("acme", tiny_long, tmp_path / "b.jsonl", n=12, min_support=0.0, seed=7,
                       test_file=test, **SMALL)
    adds_up(again)
    assert again.dropped["leak"] == 3
    assert not {e.question for e in again.kept} & set(taken)
    assert [e.question for e in again.kept] == [e.question for e in first.kept[3:]]


def test_a_judge_grader_must_pass_each_answer(kb, tiny_long, tmp_path):
    """A string_check grader on the answer: one that no random answer passes drops every
    candidate that reached it; one that every answer passes keeps the same candidates."""
    def grader(op):
        return {"type": "string_check", "name": "j", "operation": op,
                "input": "{{ sample.output_text }}", "reference": "zq-never-written"}

    passed = synthesize("acme", tiny_long, tmp_path / "a.jsonl", n=4, min_support=0.0,
                        judge=grader("ne"), as_eval=True, seed=4, **SMALL)
    failed = synthesize("acme", tiny_long, tmp_path / "b.jsonl", n=4, min_support=0.0,
                        judge=grader("eq"), as_eval=True, seed=4, **SMALL)
    adds_up(passed)
    adds_up(failed)
    assert all(e.judge_score == 1.0 for e in passed.kept) and passed.kept
    assert failed.dropped["judge"] == len(passed.kept) + passed.dropped["duplicate"]
    assert not failed.kept and not failed.written
    with pytest.raises(InvalidRequest, match="operation"):
        Synthesizer("acme", None, tmp_path / "c.jsonl", judge=grader("nearly"))


def test_as_eval_writes_cases_the_evaluation_reads(kb, tiny_long, tmp_path):
    from afinar.evals.cases import read_cases

    out = tmp_path / "eval.jsonl"
    report = synthesize("acme", tiny_long, out, n=4, min_support=0.0, as_eval=True, seed=2,
                        **SMALL)
    assert report.written, report.not_written
    cases = read_cases(out)
    assert len(cases) == len(report.kept) >= 1
    for case, ex in zip(cases, report.kept, strict=True):
        assert case.question == ex.question and case.reference == ex.answer
        assert case.metadata["gold_sources"] == [ex.source.rsplit("/", 1)[-1]]
        assert case.metadata["gold_sources"][0] in PAGES


def test_bad_options_fail_before_any_model_runs(kb, tmp_path):
    for kw, param in (({"style": "chain"}, "style"), ({"n": 0}, "n"),
                      ({"style": "raft", "k": 1}, "k"), ({"absent_share": 1.0}, "absent_share"),
                      ({"as_eval": True, "style": "raft"}, "as_eval"),
                      ({"test_file": tmp_path / "none.jsonl"}, "test")):
        with pytest.raises(InvalidRequest) as e:
            Synthesizer("acme", None, tmp_path / "o.jsonl", **kw)
        assert e.value.param == param
    with pytest.raises(Exception, match="no knowledge base"):
        Synthesizer("nope", None, tmp_path / "o.jsonl")


@pytest.fixture
def at_80():
    from afinar.cli import common

    saved = [(c, c.width) for c in (common.console, common.err_console)]
    for c, _ in saved:
        c.width = 80
    yield
    for c, width in saved:
        c.width = width


def test_cli_writes_and_reports_or_errors_in_one_line(kb, capsys, tmp_path, at_80):
    out = tmp_path / "cli.jsonl"
    code, stdout, err = run_cli(capsys, "data", "synth", "--kb", "acme", "-m", "tiny-long",
                                "--n", "2", "--as-eval", "--min-support", "0", "--out",
                                str(out))
    assert code == 0, err
    assert "generated" in stdout and "kept" in stdout and out.is_file()
    assert all(len(line) <= 80 for line in stdout.splitlines())
    code, _, err = run_cli(capsys, "data", "synth", "--kb", "acme", "-m", "tiny-long",
                           "--style", "raft", "--as-eval", "--out", str(out))
    assert code == 2 and err.count("error: ") == 1 and "--style qa" in err
    code, _, err = run_cli(capsys, "data", "synth", "--kb", "acme", "-m", "tiny-long", "--n",
                           "2", "--out", str(tmp_path / "none.jsonl"))  # all dropped
    assert code == 2 and "not written" in err and "Traceback" not in err
