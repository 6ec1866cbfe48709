"""The improvement loop (issue 16, item 7) on the tiny model: feedback on an alias's answers
(logged requests and corrections through the store API) -> the method the data allows -> a LoRA
job run by a spawned worker (as ``afinar tune create``) -> the evaluation -> the alias promoted,
with a report of each step printed within 80 columns and saved as JSON; a second run refuses for
lack of new feedback; dry runs, method choices, schedules and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afinar.data.feedback import add_feedback
from afinar.errors import InvalidRequest
from afinar.evals.improve import choose_method, new_feedback
from afinar.models import Catalog
from afinar.models.aliases import Aliases
from afinar.store.access import Caller
from afinar.store.feedback import Feedback
from afinar.tuning.jobs import Jobs
from tests.helpers import run_cli

ANSWER = "Red, blue and yellow."
WHO = Caller("key-1", "alice", frozenset({"team"}))


def serve(store: Feedback, model: str, i: int, answers: list[str]) -> str:
    """A chat request to ``model`` as the server logs it (``request_log``)."""
    rid = f"chatcmpl-test{model.replace(':', '')[:20]}{i}x{len(answers)}"
    store.log_request(request_id=rid, kind="chat", model=model,
                      prompt=[{"role": "user", "content": f"question {i}"}],
                      choices=[{"index": k, "text": a, "prompt_index": 0, "finish_reason": "stop"}
                               for k, a in enumerate(answers)], who=WHO)
    return rid


@pytest.fixture
def loop(home, tiny_model_template, tmp_path):
    Catalog().add("tiny", tiny_model_template)
    Aliases().set("colours", "tiny")
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"question {i}"},
        {"role": "assistant", "content": ANSWER}], "metadata": {"must_contain": ["blue"]}})
        + "\n" for i in range(100, 108)))
    ev = tmp_path / "eval.yaml"
    ev.write_text(f"name: colours\ntest_file: {test.name}\nmetrics: [contains_all]\n"
                  "generation: {max_tokens: 10}\nforgetting: false\nbootstrap_samples: 200\n")
    return {"eval": ev, "store": Feedback()}


def test_improve_end_to_end_trains_evaluates_and_promotes(loop, capsys, monkeypatch):
    store = loop["store"]
    for i in range(16):  # the served answers are wrong; users correct them
        rid = serve(store, "colours", i, ["quick fox"])
        add_feedback(store, WHO, rid, "correction", correction=ANSWER)
    serve(store, "elsewhere", 0, ["x"])  # another model's requests do not count
    code, out, err = run_cli(capsys, "improve", "--alias", "colours", "--eval",
                             str(loop["eval"]), "--dry-run")
    assert code == 0, err
    assert "dry run: no job was created" in out and not Jobs().list()
    assert Aliases().get("colours").model == "tiny"

    code, out, err = run_cli(capsys, "improve", "--alias", "colours", "--eval",
                             str(loop["eval"]), "--epochs", "8", "--lr-multiplier", "100",
                             "--batch-size", "8", "--seed", "3")
    assert code == 0, err
    report_path = Path(out.strip().splitlines()[-1].split("report: ", 1)[1])
    r = json.loads(report_path.read_text())
    assert r["feedback"]["new"] == 16 and r["feedback"]["by_type"] == {"correction": 16}
    assert r["method"]["chosen"] == "sft" and r["method"]["trains_with"] == "lora"
    assert r["export"]["used"] == 16 and r["export"]["written"] == {"train": 16}
    job = Jobs().get(r["job"]["id"])
    assert job.status == "succeeded" and job.model == "tiny" and job.method["type"] == "lora"
    assert r["job"]["fine_tuned_model"] == job.fine_tuned_model
    d = r["decision"]
    assert d["promote"] and d["moved"] and d["rule"] == "better" and d["diff"]["lo"] > 0
    assert Aliases().get("colours").model == job.fine_tuned_model
    last = Aliases().history("colours")[-1]
    assert last.action == "promote" and last.info["improve"] == r["id"]
    assert last.info["job"] == job.id and "afinar improve" in last.actor
    for step in ("feedback", "method", "export", "job", "promote: moved colours"):
        assert step in out, step
    from afinar.cli import common
    from afinar.cli.improve_cmd import print_report

    monkeypatch.setattr(common.console, "width", 80)
    print_report(r)  # the same report, as a terminal of 80 columns shows it
    shown = capsys.readouterr().out
    assert "colours" in shown and "contains_all" in shown and "1.00 [1.00,1.00]" in shown
    assert max(len(line) for line in shown.splitlines() if "report: " not in line) <= 80

    # the feedback was used: a second run has none new
    code, out, err = run_cli(capsys, "improve", "--alias", "colours")
    assert code == 2 and err.startswith("error: too little new feedback for colours: 0")
    assert len(err.strip().splitlines()) == 1
    # new feedback on the promoted model's answers counts again (the alias's requests)
    rid = serve(store, "colours", 50, ["Red"])
    add_feedback(store, WHO, rid, "rating", rating=1)
    assert len(new_feedback(store.settings, Aliases(), "colours",
                            Aliases().get("colours").info["improve"]["feedback_seq"])) == 1


def test_the_method_follows_the_data(loop):
    store = loop["store"]
    items = lambda: new_feedback(store.settings, Aliases(), "colours", 0)  # noqa: E731
    r1 = serve(store, "colours", 1, ["quick fox"])
    add_feedback(store, WHO, r1, "rating", rating=1)
    r2 = serve(store, "tiny", 2, ["lazy dog"])  # a model the alias stands for counts too
    add_feedback(store, WHO, r2, "rating", rating=-1)
    if "kto" in __import__("afinar.tuning.methods", fromlist=["METHODS"]).METHODS:
        assert choose_method("auto", items())[0] == "kto"
    else:
        with pytest.raises(InvalidRequest, match="no kto method is registered"):
            choose_method("auto", items())
    fixed = serve(store, "colours", 3, ["quick fox"])
    add_feedback(store, WHO, fixed, "correction", correction=ANSWER)
    method, reasons = choose_method("auto", items())
    assert method == "sft" and "1 corrections" in reasons[-1]
    both = serve(store, "colours", 4, ["quick fox", "Red, blue"])
    add_feedback(store, WHO, both, "preference", preferred_index=1)
    method, reasons = choose_method("auto", items())
    assert method == "dpo" and "1 preference pairs" in reasons[-1]
    assert choose_method("sft", items())[0] == "sft"
    with pytest.raises(InvalidRequest, match="grpo"):
        choose_method("grpo", items())


def test_improve_refuses_bad_input_with_one_line(loop, capsys, tmp_path):
    store = loop["store"]
    for i in range(3):
        add_feedback(store, WHO, serve(store, "colours", i, ["x"]), "correction",
                     correction=ANSWER)
    ev = str(loop["eval"])
    for argv, needle in [
        (("--alias", "nosuch", "--eval", ev), "no alias 'nosuch'"),
        (("--alias", "colours", "--eval", str(tmp_path / "none.yaml")), "none.yaml"),
        (("--alias", "colours"), "give --eval"),
        (("--alias", "colours", "--eval", ev), "too little new feedback for colours: 3"),
        (("--alias", "colours", "--eval", ev, "--min-feedback", "2", "--method", "magic"),
         "--method must be one of"),
        (("--alias", "colours", "--eval", ev, "--every", "soon"), "--every"),
        (("--alias", "colours", "--eval", ev, "--every", "1d", "--dry-run"), "drop --dry-run"),
    ]:
        code, out, err = run_cli(capsys, "improve", *argv)
        assert code == 2 and err.startswith("error: ") and needle in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
    assert not Jobs().list() and Aliases().get("colours").model == "tiny"


def test_every_registers_the_loop_as_a_schedule(loop, capsys):
    from afinar.store.db import get_database
    from afinar.store.schedules import Schedules

    code, out, err = run_cli(capsys, "improve", "--alias", "colours", "--eval",
                             str(loop["eval"]), "--every", "1d", "--json")
    assert code == 0, err
    got = json.loads(out)
    rec = Schedules(get_database()).get(got["schedule"])
    assert rec.every_s == 86400 and rec.argv[:5] == ["improve", "--alias", "colours", "--eval",
                                                     str(loop["eval"].resolve())]
    assert not Jobs().list()  # registered, not run
