"""Model aliases and promotion (issue 16, item 6): an alias is set, moved, listed and deleted with
its history kept; requests to it through a live server (openai SDK) follow a move at once; it is
as visible as its target; ``afinar promote`` moves it only when the candidate beats the current
model outside the paired interval, refuses a candidate that is the same or worse, and
``--dry-run`` moves nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import openai
import pytest

from afinar.errors import Conflict, InvalidRequest, NotFound
from afinar.evals.promotion import decide, promote
from afinar.models import Catalog
from afinar.models.aliases import Aliases
from afinar.server.app import create_app
from afinar.store.keys import ApiKeys
from tests.helpers import home_at, run_cli
from tests.live_server import client, complete, live_server
from tests.tiny_model import build_tiny_chat_model

ANSWER = "Red, blue and yellow."
MSGS = [{"role": "user", "content": "question 1"}]


def test_alias_set_move_list_delete_and_history(home, tiny_model_template, tmp_path, capsys):
    other = build_tiny_chat_model(tmp_path / "tiny-b", seed=1)
    Catalog().add("tiny", tiny_model_template)
    Catalog().add("tiny-b", other)
    code, out, _ = run_cli(capsys, "models", "alias", "prod", "tiny", "--reason", "first one")
    assert code == 0 and "alias prod -> tiny" in out
    assert Catalog().get("prod").id == "tiny" and Catalog().resolve("prod") == "tiny"
    code, out, _ = run_cli(capsys, "models", "alias", "prod", "tiny-b")
    assert code == 0 and "moved alias prod: tiny -> tiny-b" in out
    assert Catalog().get("prod").id == "tiny-b"
    code, out, _ = run_cli(capsys, "models", "alias", "--list", "--json")
    assert [(a["name"], a["model"]) for a in json.loads(out)] == [("prod", "tiny-b")]
    code, out, _ = run_cli(capsys, "models", "alias", "prod", "--history", "--json")
    rows = json.loads(out)
    assert [(r["action"], r["from"], r["to"]) for r in rows] == [
        ("set", None, "tiny"), ("move", "tiny", "tiny-b")]
    assert rows[0]["reason"] == "first one" and "(command line)" in rows[0]["actor"]
    assert all(r["created_at"] > 0 for r in rows)

    for argv, needle in [  # each one error line, exit 2, nothing changed
        (("models", "alias", "prod", "nope"), "no model 'nope'"),
        (("models", "alias", "tiny", "tiny-b"), "'tiny' is a model id"),
        (("models", "alias", "ft:x", "tiny"), "invalid alias name"),
        (("models", "alias", "stage", "prod"), "'prod' is an alias"),
        (("models", "alias", "nosuch", "--history"), "no alias 'nosuch'"),
        (("models", "alias", "--delete", "nosuch"), "no alias 'nosuch'"),
        (("models", "remove", "tiny-b"), "alias 'prod' stands for 'tiny-b'"),
        (("models", "remove", "prod"), "'prod' is an alias"),
        (("models", "add", "prod", str(other)), "'prod' is an alias"),
    ]:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and err.startswith("error: ") and needle in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
    assert Aliases().get("prod").model == "tiny-b"

    code, out, _ = run_cli(capsys, "models", "alias", "prod", "--delete", "--reason", "retired")
    assert code == 0 and "deleted alias prod (it stood for tiny-b)" in out
    with pytest.raises(NotFound):
        Catalog().get("prod")
    assert [h.action for h in Aliases().history("prod")] == ["set", "move", "delete"]
    assert Aliases().history("prod")[-1].reason == "retired"
    Catalog().remove("tiny-b")  # no alias stands for it any more


def other_model(template: Path, dest: Path) -> Path:
    """A copy of the tiny model whose chat template's default system prompt is longer: the
    same messages take more prompt tokens, so the usage tells which model answered."""
    folder = Path(shutil.copytree(template, dest))
    f = folder / "chat_template.jinja"
    f.write_text(f.read_text().replace("You are a helpful assistant.",
                                       "You are a helpful assistant who answers well."))
    return folder


def _served(c: openai.OpenAI, model: str) -> tuple[int, str]:
    """(prompt tokens, text) of a chat completion: which template, and so which model."""
    r = complete(c.chat.completions.create(model=model, messages=MSGS, max_tokens=8,
                                           temperature=0))
    return r.usage.prompt_tokens, r.choices[0].message.content


def _text(c: openai.OpenAI, model: str) -> str:
    return _served(c, model)[1]


def test_requests_follow_a_move_without_restart(home, tiny_model_template, tmp_path):
    Catalog().add("tiny", tiny_model_template)
    Catalog().add("tiny-b", other_model(tiny_model_template, tmp_path / "tiny-b"))
    Aliases().set("prod", "tiny")
    keys = ApiKeys()
    key = keys.create("alice")[1]
    app = create_app()
    app.state.spawn_workers = False
    with live_server(app) as url:
        c = client(url, key)
        a, b = _served(c, "tiny"), _served(c, "tiny-b")
        assert a[0] != b[0], "the two models must be told apart by their prompts' length"
        assert _served(c, "prod") == a
        listed = {m.id: m for m in complete(c.models.list()).data}
        assert listed["prod"].model_extra["afinar"]["alias_of"] == "tiny"
        one = complete(c.models.retrieve("prod"))
        assert one.id == "prod" and one.model_extra["afinar"]["alias_of"] == "tiny"

        Aliases().set("prod", "tiny-b", reason="the server keeps running")  # another process
        assert _served(c, "prod") == b  # the very next request follows
        stream = list(c.chat.completions.create(model="prod", messages=MSGS, max_tokens=8,
                                                temperature=0, stream=True,
                                                stream_options={"include_usage": True}))
        assert stream[-1].usage.prompt_tokens == b[0]
        resp = c.responses.create(model="prod", input="question 1", max_output_tokens=16,
                                  temperature=0)
        assert resp.usage.input_tokens == c.responses.create(
            model="tiny-b", input="question 1", max_output_tokens=16,
            temperature=0).usage.input_tokens != c.responses.create(
            model="tiny", input="question 1", max_output_tokens=16,
            temperature=0).usage.input_tokens
        r = c.completions.create(model="prod", prompt="question 1", max_tokens=4)
        assert r.choices and r.model == "prod"
        assert c.models.retrieve("prod").model_extra["afinar"]["alias_of"] == "tiny-b"
        Aliases().delete("prod")
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="prod", messages=MSGS, max_tokens=2)
        assert "prod" not in {m.id for m in c.models.list().data}


def test_an_alias_is_as_visible_as_its_target(home, tiny_model_template):
    from afinar.store.files import Files
    from afinar.tuning.jobs import Jobs

    Catalog().add("tiny", tiny_model_template)
    keys = ApiKeys()
    alpha, beta = keys.create("a", project="alpha")[1], keys.create("b", project="beta")[1]
    rows = Path(home) / "t.jsonl"
    rows.parent.mkdir(parents=True, exist_ok=True)
    rows.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}) + "\n"
        for i in range(10)))
    job = Jobs().create(model="tiny", training_file=Files().create_from_path(
        rows, "fine-tune").id, owner={"project_id": "alpha"})
    Catalog().add("alpha-model", tiny_model_template, info={"job": job.id})  # alpha's model
    Aliases().set("alpha-prod", "alpha-model")
    Aliases().set("everyone", "tiny")
    app = create_app()
    app.state.spawn_workers = False
    with live_server(app) as url:
        a, b = client(url, alpha), client(url, beta)
        assert {"alpha-prod", "everyone"} <= {m.id for m in a.models.list().data}
        seen = {m.id for m in b.models.list().data}
        assert "everyone" in seen and "alpha-prod" not in seen and "alpha-model" not in seen
        with pytest.raises(openai.NotFoundError):
            b.models.retrieve("alpha-prod")
        with pytest.raises(openai.NotFoundError):
            b.chat.completions.create(model="alpha-prod", messages=MSGS, max_tokens=2)
        assert _text(a, "alpha-prod") == _text(a, "alpha-model")


# -- promotion -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_template):
    """One home: the tiny model and a LoRA fine-tune of it trained (by a real job) to answer
    every question with ANSWER, and an evaluation whose metric (contains_all: "blue") the
    fine-tune satisfies on every case and the random base on none."""
    root = tmp_path_factory.mktemp("promotion")
    with home_at(root / "home"):
        yield _world(root, tiny_model_template)


def _world(root: Path, tiny_model_template: Path) -> dict:
    from afinar.settings import get_settings
    from afinar.store.files import Files
    from afinar.tuning.jobs import Jobs
    from afinar.tuning.runner import JobRunner

    Catalog().add("tiny", tiny_model_template)
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"question {i}"},
        {"role": "assistant", "content": ANSWER}]}) + "\n" for i in range(16)))
    job = Jobs().create(model="tiny", training_file=Files().create_from_path(
        train, "fine-tune").id, seed=3, suffix="colours",
        hyperparameters={"n_epochs": 8, "batch_size": 8, "learning_rate_multiplier": 100})
    assert JobRunner(Jobs().get(job.id), get_settings(), "test").run() == "succeeded"
    ft = Jobs().get(job.id).fine_tuned_model
    test = root / "test.jsonl"
    test.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"question {i}"},
        {"role": "assistant", "content": ANSWER}], "metadata": {"must_contain": ["blue"]}})
        + "\n" for i in range(100, 108)))
    ev = root / "eval.yaml"
    ev.write_text(f"name: colours\ntest_file: {test.name}\nmetrics: [contains_all, token_f1]\n"
                  "main_metric: contains_all\ngeneration: {max_tokens: 10}\n"
                  "forgetting: false\nbootstrap_samples: 200\n")
    return {"root": root, "ft": ft, "eval": ev, "home": root / "home"}


@pytest.fixture
def at_home(world):
    with home_at(world["home"]):
        yield world


def test_promotion_moves_only_a_better_candidate_and_dry_run_moves_nothing(at_home, capsys):
    w = at_home
    Aliases().set("colours", "tiny")
    code, out, err = run_cli(capsys, "promote", "--alias", "colours", "--candidate", w["ft"],
                             "--eval", str(w["eval"]), "--dry-run")
    assert code == 0, err
    assert "promote: would move colours to" in out and "dry run: nothing moved" in out
    assert Aliases().get("colours").model == "tiny"
    assert [h.action for h in Aliases().history("colours")] == ["set"]  # a dry run: no row

    d, summary = promote("colours", w["ft"], w["eval"])
    assert d.promote and d.moved and d.rule == "better"
    assert d.diff["lo"] > 0 and d.diff["mean"] == pytest.approx(1.0)
    rows = {r["name"]: r for r in summary["strategies"]}
    assert rows[d.columns["candidate"]]["metrics"]["contains_all"]["mean"] == 1.0
    assert rows[d.columns["current"]]["metrics"]["contains_all"]["mean"] == 0.0
    assert Aliases().get("colours").model == w["ft"]
    last = Aliases().history("colours")[-1]
    assert (last.action, last.from_model, last.to_model) == ("promote", "tiny", w["ft"])
    assert "1.00" in last.reason and "0.00" in last.reason and "above 0" in last.reason
    assert last.info["run"] == d.run_id and last.info["rule"] == "better"

    # the base as a candidate against the fine-tune: worse, outside the interval: refused
    code, out, err = run_cli(capsys, "promote", "--alias", "colours", "--candidate", "tiny",
                             "--eval", str(w["eval"]))
    assert code == 0, err
    assert "refused: colours stays on" in out and "below 0" in out
    assert Aliases().get("colours").model == w["ft"]
    last = Aliases().history("colours")[-1]
    assert (last.action, last.from_model, last.to_model) == ("refuse", w["ft"], "tiny")
    assert last.info["rule"] == "worse"

    # the same model again: refused without an evaluation
    d, summary = promote("colours", w["ft"], w["eval"])
    assert not d.promote and d.rule == "same_model" and summary is None
    assert Aliases().get("colours").model == w["ft"]


def test_a_tie_moves_only_when_the_candidate_is_cheaper(at_home, tmp_path):
    """A registered copy of the same weights answers the same: a tie (0 inside the interval),
    and not cheaper (same tokens, both need no training): refused. The advisor's cost rule
    decides a tie between a fine-tune and a base: the base needs no training."""
    copy = Path(shutil.copytree(Catalog().get("tiny").path, tmp_path / "tiny-copy"))
    Catalog().add("tiny-copy", copy)
    Aliases().set("tie", "tiny")
    d, summary = promote("tie", "tiny-copy", at_home["eval"], dry_run=True)
    assert d.diff["lo"] <= 0 <= d.diff["hi"]
    # on a quiet machine the copy's measured latency may happen to be lower (a real, timed
    # reason); the decision without latency is the deterministic one
    assert d.rule == "tie_not_cheaper" or (d.rule == "tie_cheaper"
                                          and "answers faster" in d.reasons[-1])
    assert Aliases().get("tie").model == "tiny"
    cur, cand = d.columns["current"], d.columns["candidate"]
    rows = {r["name"]: r for r in summary["strategies"]}
    for r in rows.values():
        r["cost"]["latency_p50_s"] = r["cost"]["latency_p95_s"] = None
    ok, rule, _, _ = decide(summary, cur, cand)
    assert not ok and rule == "tie_not_cheaper"
    # the same table read with the candidate's training removed from the current column:
    rows[cur]["fine_tuned"] = True
    ok, rule, reasons, _ = decide(summary, cur, cand)
    assert ok and rule == "tie_cheaper" and "needs no training" in reasons[-1]
    rows[cur]["fine_tuned"] = False
    rows[cur]["cost"]["completion_tokens"] += 3
    ok, rule, reasons, _ = decide(summary, cur, cand)
    assert ok and rule == "tie_cheaper" and "3.0 fewer tokens" in reasons[-1]


def test_promotion_errors_are_one_line(at_home, capsys, tmp_path):
    w = at_home
    Aliases().set("errs", "tiny")
    two = tmp_path / "two.yaml"
    two.write_text(w["eval"].read_text().replace("bootstrap_samples: 200",
                                                 "strategies: [base, rag]") + "\n")
    two_test = tmp_path / "test.jsonl"
    shutil.copy(w["eval"].parent / "test.jsonl", two_test)
    for argv, needle in [
        (("--alias", "nosuch", "--candidate", "tiny", "--eval", str(w["eval"])),
         "no alias 'nosuch'"),
        (("--alias", "errs", "--candidate", "tiny", "--eval", str(tmp_path / "none.yaml")),
         "none.yaml"),
        (("--alias", "errs", "--candidate", "nope", "--eval", str(w["eval"])),
         "no model 'nope'"),
        (("--alias", "errs", "--candidate", w["ft"], "--eval", str(two)), "one strategy"),
    ]:
        code, out, err = run_cli(capsys, "promote", *argv)
        assert code == 2 and err.startswith("error: ") and needle in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
    assert [h.action for h in Aliases().history("errs")] == ["set"]
    with pytest.raises(InvalidRequest):
        Aliases().set("errs", "errs")
    with pytest.raises(Conflict):  # a promotion decided against a model the alias left
        Aliases().set("errs", w["ft"], expect="tiny-other")


def test_a_grader_gate_can_refuse_a_better_candidate(at_home, tmp_path, capsys):
    w = at_home
    Aliases().set("gated", "tiny")
    gate = tmp_path / "gate.yaml"
    gate.write_text("type: string_check\nname: says_green\noperation: like\n"
                    "input: '{{ sample.output_text }}'\nreference: green\n")
    d, _ = promote("gated", w["ft"], w["eval"], dry_run=True, gate=gate)
    assert not d.promote and d.rule == "gate" and d.gate["mean"] == 0.0 and d.gate["n"] == 8
    assert "Gate says_green" in d.reasons[-1] and "failed" in d.reasons[-1]
    gate.write_text(gate.read_text().replace("green", "blue").replace("says_green",
                                                                      "says_blue"))
    code, out, err = run_cli(capsys, "promote", "--alias", "gated", "--candidate", w["ft"],
                             "--eval", str(w["eval"]), "--gate", str(gate), "--gate-min", "0.9")
    assert code == 0, err
    assert "promote: moved gated" in out and "says_blue" in out and "passed" in out
    assert Aliases().get("gated").model == w["ft"]
    assert Aliases().history("gated")[-1].info["gate"]["mean"] == 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: string_check\nname: x\n")
    code, out, err = run_cli(capsys, "promote", "--alias", "gated", "--candidate", "tiny",
                             "--eval", str(w["eval"]), "--gate", str(bad))
    assert code == 2 and err.startswith("error: ") and "bad.yaml" in err
