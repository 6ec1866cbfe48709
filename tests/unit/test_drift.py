"""The drift monitor (issue 19, item 4): the nearest-neighbour permutation test on built
embeddings (a shifted sample is flagged, a sample of the same distribution is not), and
``afinar monitor`` on a tiny home: on-topic vs off-topic query files told apart, the JSON and
HTML reports, the 80-column table, the request log's signals with a queued action, and one
``error:`` line for each kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from afinar.cli import common
from afinar.data.feedback import add_feedback
from afinar.evals.drift import distance_test, near_groups, retrieval_test
from afinar.models import Catalog
from afinar.models.aliases import Aliases
from afinar.rag.answer import NOTHING_FOUND
from afinar.store.access import Caller
from afinar.store.feedback import Feedback
from tests.helpers import run_cli

PRODUCTS = ["X100", "X200", "P7", "C5", "M1", "T10"]
TEMPLATES = ["How many seconds do I press reset on a {p}?",
             "Which power adapter does the {p} need?",
             "For how many months is the {p} covered by warranty?",
             "Where do I log in to set up the {p} router?",
             "My {p} froze. How do I factory reset it?",
             "What voltage should a new charger for my {p} have?"]
ON_TOPIC = [t.format(p=p) for p in ("Z9", "Q3") for t in TEMPLATES]
OFF_TOPIC = ["What is the capital of France?", "How do I bake sourdough bread at home?",
             "Who won the football world cup in 1998?", "Explain photosynthesis simply.",
             "What is a good name for a black cat?", "How many legs does a spider have?",
             "Recommend a novel set in Japan.", "How do volcanoes form?",
             "What is the boiling point of water on Everest?", "Translate 'good night' to German.",
             "Which planet has the most moons?", "How long should I boil an egg?"]
WHO = Caller("key-1", "alice", frozenset({"team"}))
FAST = "permutations: 199\n"


def cloud(rng, centers, n, spread=0.35):
    x = centers[rng.integers(len(centers), size=n)] + spread * rng.standard_normal(
        (n, centers.shape[1]))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_test_flags_a_shifted_sample_and_not_one_of_the_same_distribution():
    rng = np.random.default_rng(7)
    centers, elsewhere = rng.standard_normal((6, 32)), rng.standard_normal((6, 32))
    reference = cloud(rng, centers, 300)
    same = distance_test(cloud(rng, centers, 60), reference, permutations=199, seed=1,
                         min_effect=0.05)
    shifted = distance_test(cloud(rng, elsewhere, 60), reference, permutations=199, seed=1,
                            min_effect=0.05)
    assert same["p_value"] > 0.05 and not same["drifted"], same["p_value"]
    assert abs(same["effect"]) < 0.05 and same["outside_share"] < 0.2
    assert shifted["p_value"] <= 0.01 and shifted["drifted"] and shifted["effect"] > 0.3
    assert shifted["outside_share"] > 0.9
    # half the queries from elsewhere: still found, with about half outside
    mixed = distance_test(np.concatenate([cloud(rng, centers, 30), cloud(rng, elsewhere, 30)]),
                          reference, permutations=199, seed=1, min_effect=0.05)
    assert mixed["drifted"] and 0.3 < mixed["outside_share"] < 0.8
    # a significant but small shift is not acted on below min_effect
    assert not distance_test(cloud(rng, elsewhere, 60), reference, permutations=199, seed=1,
                             min_effect=2.0)["drifted"]


def test_near_duplicates_are_not_each_others_neighbours():
    """A reference made of pairs of copies looks, to plain leave-one-out, at distance 0 from
    itself, so same-distribution queries would look far; grouped, they do not."""
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((6, 32))
    base = cloud(rng, centers, 150)
    reference = np.concatenate([base, base])
    texts = [f"question number {i} about routers" for i in range(150)] * 2
    queries = cloud(rng, centers, 40)
    qtexts = [f"a new query {i} on something" for i in range(40)]
    plain = distance_test(queries, reference, permutations=199, min_effect=0.05)
    groups = near_groups(qtexts + texts, 0.9)
    assert len(set(groups[40:].tolist())) == 150  # each copy joined its original
    grouped = distance_test(queries, reference, permutations=199, min_effect=0.05,
                            groups=groups)
    assert plain["reference_mean"] < 1e-5 and plain["drifted"]
    assert not grouped["drifted"] and grouped["p_value"] > 0.05


def test_retrieval_test_sees_scores_fall():
    rng = np.random.default_rng(0)
    before = (0.7 + 0.05 * rng.standard_normal(40)).tolist()
    assert retrieval_test((0.5 + 0.05 * rng.standard_normal(40)).tolist(), before, 0.01,
                          0.05)["falling"]
    assert not retrieval_test((0.7 + 0.05 * rng.standard_normal(40)).tolist(), before, 0.01,
                              0.05)["falling"]


@pytest.fixture
def drift_home(home, tiny_model_template, tmp_path):
    Catalog().add("tiny", tiny_model_template)
    rows = [{"messages": [{"role": "system", "content": "You answer router tickets."},
                          {"role": "user", "content": t.format(p=p)},
                          {"role": "assistant", "content": "ok"}]}
            for p in PRODUCTS for t in TEMPLATES]
    files = {}
    for name, data in (("train.jsonl", rows), ("on.jsonl", [{"question": q} for q in ON_TOPIC]),
                       ("off.jsonl", [{"messages": [{"role": "user", "content": q}]}
                                      for q in OFF_TOPIC])):
        files[name] = tmp_path / name
        files[name].write_text("".join(json.dumps(r) + "\n" for r in data))
    files["cfg"] = tmp_path / "drift.yaml"
    files["cfg"].write_text(FAST)
    return files


def monitor_json(capsys, *argv):
    code, out, err = run_cli(capsys, "monitor", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_cli_tells_on_topic_from_off_topic_queries(drift_home, capsys, tmp_path):
    f = drift_home
    args = ("--train", str(f["train.jsonl"]), "--config", str(f["cfg"]))
    on = monitor_json(capsys, "tiny", "--queries", str(f["on.jsonl"]), *args)
    html_out = tmp_path / "drift.html"
    off = monitor_json(capsys, "tiny", "--queries", str(f["off.jsonl"]), *args,
                       "--html", str(html_out))
    t_on, t_off = on["training"], off["training"]
    assert t_on["n_queries"] == len(ON_TOPIC) and t_on["n_reference"] == 36
    assert not t_on["drifted"] and t_off["drifted"], (t_on, t_off)
    assert t_off["p_value"] <= 0.01 and t_off["effect"] > t_on["effect"] + 0.15
    assert t_off["outside_share"] > 0.9 > t_on["outside_share"]
    assert [a["action"] for a in off["recommendations"]] == ["re-train"]
    assert not on["recommendations"]
    assert "not an alias" in off["recommendations"][0]["why_not"]
    page = html_out.read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") >= 2
    assert "re-train" in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    # the terminal table within 80 columns
    saved = common.console.width
    common.console.width = 80
    try:
        code, out, err = run_cli(capsys, "monitor", "tiny", "--queries", str(f["off.jsonl"]),
                                 *args)
    finally:
        common.console.width = saved
    assert code == 0, err
    assert max(len(ln) for ln in out.splitlines()) <= 80, out
    assert "training distance" in out and "re-train" in out and "…" not in out


def test_the_request_log_feeds_the_signals_and_queue_queues_improve(drift_home, capsys,
                                                                    tmp_path):
    """Logged off-topic questions answered 'not found' and rated -1 on an alias: re-train
    (queued as afinar improve) with the log's abstention share and negative rate."""
    from afinar.store.db import get_database
    from afinar.store.schedules import Schedules

    f = drift_home
    Aliases().set("helpdesk", "tiny")
    store = Feedback()
    for i, q in enumerate(OFF_TOPIC):
        rid = f"chatcmpl-drift{i}"
        store.log_request(request_id=rid, kind="chat", model="helpdesk",
                          prompt=[{"role": "user", "content": q}],
                          choices=[{"index": 0, "text": NOTHING_FOUND, "prompt_index": 0,
                                    "finish_reason": "stop"}], who=WHO)
        add_feedback(store, WHO, rid, "rating", rating=-1 if i % 4 else 1)
    ev = tmp_path / "eval.yaml"
    ev.write_text("test_file: test.jsonl\nmetrics: [token_f1]\n")
    (tmp_path / "test.jsonl").write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": q}, {"role": "assistant", "content": "ok"}]}) + "\n"
        for q in ON_TOPIC))
    r = monitor_json(capsys, "helpdesk", "--train", str(f["train.jsonl"]), "--eval", str(ev),
                     "--config", str(f["cfg"]), "--queue")
    assert r["queries"]["source"] == "request log" and r["queries"]["n"] == len(OFF_TOPIC)
    assert r["abstention"]["share"] == 1.0 and r["abstention"]["high"]
    assert r["feedback"]["ratings"] == 12 and r["feedback"]["negative"] == 9
    assert r["feedback"]["high"] and r["evaluation"]["drifted"] and r["training"]["drifted"]
    actions = {a["action"]: a for a in r["recommendations"]}
    assert set(actions) == {"re-sync the knowledge base", "extend the evaluation set",
                            "re-train"}
    retrain = actions["re-train"]
    assert retrain["command"] == ["improve", "--alias", "helpdesk", "--eval", str(ev.resolve())]
    sched = Schedules(get_database()).get(retrain["queued"])
    assert sched.argv == retrain["command"] and sched.every_s is None
    assert actions["re-sync the knowledge base"]["queued"] is None  # no folder is known
    assert len(Schedules(get_database()).list()) == 1


def test_bad_input_is_one_error_line_before_any_work(drift_home, capsys, tmp_path):
    f = drift_home
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "fine"}\n{"question": \n')
    noq = tmp_path / "noq.jsonl"
    noq.write_text('{"answer": "x"}\n')
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("alpha: 2\n")
    unknown_cfg = tmp_path / "unknown.yaml"
    unknown_cfg.write_text("alpah: 0.1\n")
    q = str(f["on.jsonl"])
    for argv, needle in [
        (("nosuch", "--queries", q), "no model 'nosuch'"),
        (("tiny", "--queries", str(tmp_path / "none.jsonl")), "none.jsonl"),
        (("tiny", "--queries", str(empty)), "empty.txt: no queries"),
        (("tiny", "--queries", str(broken)), "broken.jsonl:2: line: not JSON"),
        (("tiny", "--queries", str(noq)), "noq.jsonl:1: no question"),
        (("tiny", "--queries", q, "--config", str(bad_cfg)), "bad.yaml: alpha:"),
        (("tiny", "--queries", q, "--config", str(unknown_cfg)), "unknown.yaml: alpah:"),
        (("tiny", "--queries", q, "--train", str(tmp_path / "gone.jsonl")), "gone.jsonl"),
        (("tiny", "--queries", q, "--kb", "nokb"), "nokb"),
        (("tiny", "--queries", q, "--since", "soon"), "--since 'soon'"),
        (("tiny",), "no queries: no logged request to tiny"),
    ]:
        code, out, err = run_cli(capsys, "monitor", *argv)
        assert code == 2 and err.startswith("error: ") and needle in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err


def test_every_registers_a_schedule_the_worker_runs(drift_home, capsys, tmp_path,
                                                    monkeypatch):
    """``--every 1d``: the command, paths made absolute, as a schedule; the worker runs it (a
    subprocess) and its report is the run's output; an unknown model is refused at once."""
    from afinar.store.db import get_database
    from afinar.store.schedules import Schedules
    from afinar.tuning.worker import run_worker

    f = drift_home
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    code, out, err = run_cli(capsys, "monitor", "tiny", "--queries", "off.jsonl", "--train",
                             "train.jsonl", "--config", str(f["cfg"]), "--every", "1d",
                             "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["every_s"] == 86400 and got["argv"][:2] == ["monitor", "tiny"]
    assert got["argv"][got["argv"].index("--queries") + 1] == str(f["off.jsonl"])
    assert "--every" not in got["argv"] and "--queue" not in got["argv"]
    run_worker(exit_when_idle=True, poll_s=0.1, log=lambda m: None)
    s = Schedules(get_database())
    run = s.runs(got["schedule"])[-1]
    assert run.exit_code == 0 and "training distance" in run.output, run.output
    assert "re-train" in run.output
    code, _, err = run_cli(capsys, "monitor", "nope", "--queries", "off.jsonl", "--every", "1d")
    assert code == 2 and err.strip().splitlines()[-1].startswith("error:") and "nope" in err
    code, _, err = run_cli(capsys, "monitor", "tiny", "--queries", "off.jsonl", "--every", "x")
    assert code == 2 and "--every" in err
    assert len(s.list()) == 1  # neither refusal stored a schedule


def test_a_knowledge_base_gives_the_retrieval_and_abstention_signals(drift_home, capsys,
                                                                     tmp_path):
    """``--kb``: off-topic questions' top-1 retrieval falls against the training questions' and
    retrieval finds no source for most of them: re-sync, by hand until a sync schedule names the
    base's folder; then --queue queues that schedule's command once. On-topic: neither."""
    from afinar.rag.kb import KnowledgeBases
    from afinar.store.db import get_database
    from afinar.store.schedules import Schedules

    f = drift_home
    docs = tmp_path / "docs"
    docs.mkdir()
    for p in PRODUCTS + ["Z9", "Q3"]:
        (docs / f"{p}.md").write_text(
            f"# {p} router\n\nTo factory reset the {p}, press reset for 10 seconds. The {p} "
            f"needs a 12 V power adapter. The {p} warranty covers 24 months. Set up the {p} "
            "router at http://192.168.1.1 with the password on its label.\n")
    KnowledgeBases().create("routers")
    KnowledgeBases().add("routers", sorted(docs.glob("*.md")))
    args = ("--train", str(f["train.jsonl"]), "--config", str(f["cfg"]), "--kb", "routers")
    on = monitor_json(capsys, "tiny", "--queries", str(f["on.jsonl"]), *args)
    off = monitor_json(capsys, "tiny", "--queries", str(f["off.jsonl"]), *args)
    assert on["retrieval"]["baseline"] == "training questions"
    assert not on["retrieval"]["falling"] and off["retrieval"]["falling"], (on, off)
    assert off["retrieval"]["recent_median"] < on["retrieval"]["recent_median"]
    assert on["abstention"]["share"] < 0.5 <= off["abstention"]["share"]
    assert "re-sync the knowledge base" not in [a["action"] for a in on["recommendations"]]
    resync = [a for a in off["recommendations"] if a["action"] == "re-sync the knowledge base"]
    assert resync and resync[0]["command"] is None and "kb sync routers" in resync[0]["why_not"]
    s = Schedules(get_database())
    s.add(["kb", "sync", "routers", str(docs)], 86400)
    off = monitor_json(capsys, "tiny", "--queries", str(f["off.jsonl"]), *args, "--queue")
    resync = [a for a in off["recommendations"] if a["action"] == "re-sync the knowledge base"]
    assert resync[0]["command"] == ["kb", "sync", "routers", str(docs)]
    queued = s.get(resync[0]["queued"])
    assert queued.argv == resync[0]["command"] and queued.every_s is None  # once, due now
