"""Graders where they are used: the evaluation metric (``{grader: ...}`` in eval.yaml), the
command line (``afinar graders validate|run``) and OpenAI's HTTP endpoints
(``/v1/fine_tuning/alpha/graders/validate|run``, driven with the openai SDK)."""

from __future__ import annotations

import json

import pytest

from afinar.errors import InvalidRequest
from tests.unit.test_graders import MODEL_SPECS, OPENAI_MULTI, sc


# --- the evaluation metric ------------------------------------------------------------------

def test_an_eval_metric_may_be_a_grader_inline_or_from_a_file(tmp_path, tiny_long):
    import yaml

    from afinar.evals.config import load_config
    from afinar.evals.runner import run

    test = tmp_path / "test.jsonl"
    rows = [("What colour is the sky?", "blue", {"colour": "blue"}),
            ("What colour is grass?", "green", {"colour": "green"})]
    test.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": q}, {"role": "assistant", "content": a}],
        "metadata": m}) + "\n" for q, a, m in rows))
    (tmp_path / "graders").mkdir()
    (tmp_path / "graders" / "long.yaml").write_text(yaml.safe_dump({
        "type": "python", "name": "long_enough",
        "source": "def grade(sample, item):\n    return float(len(sample['output_text']) > 0)\n"}))
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({
        "test_file": "test.jsonl", "model": "tiny-long", "forgetting": False,
        "generation": {"max_tokens": 4, "temperature": 0}, "bootstrap_samples": 100,
        "metrics": [{"grader": "graders/long.yaml"},
                    {"grader": sc(input="{{ item.colour }}", reference="{{ item.reference }}",
                                  name="meta_is_item")},
                    "exact_match"],
        "main_metric": "long_enough"}))
    cfg = load_config(tmp_path / "eval.yaml")
    assert cfg.metric_names() == ["long_enough", "meta_is_item", "exact_match"]
    s = run(cfg).summary()
    row = s["strategies"][0]["metrics"]
    assert row["meta_is_item"] == {"mean": 1.0, "lo": 1.0, "hi": 1.0, "n": 2, "notes": {}}
    assert row["long_enough"]["n"] == 2 and row["long_enough"]["lo"] is not None
    assert row["long_enough"]["lo"] <= row["long_enough"]["mean"] <= row["long_enough"]["hi"]


def test_eval_grader_metrics_are_checked_with_the_configuration(tmp_path):
    from afinar.evals.config import load_config, parse_config

    base = {"test_file": "t.jsonl"}
    with pytest.raises(InvalidRequest, match=r"^metrics\.0\.grader\.operation: "):
        parse_config({**base, "metrics": [{"grader": sc(operation="neq")}]})
    (tmp_path / "g.json").write_text(json.dumps({**sc(), "operation": "neq"}))
    with pytest.raises(InvalidRequest, match=rf"^{tmp_path / 'g.json'}: operation: "):
        parse_config({**base, "metrics": [{"grader": "g.json"}]}, tmp_path)
    with pytest.raises(InvalidRequest, match="grader file not found"):
        parse_config({**base, "metrics": [{"grader": "none.yaml"}]}, tmp_path)
    with pytest.raises(InvalidRequest, match="two metrics named 'exact'"):
        parse_config({**base, "metrics": [{"grader": sc()}, {"grader": sc()}]})
    (tmp_path / "e.yaml").write_text("test_file: t.jsonl\nmetrics: [{grader: 3}]\n")
    with pytest.raises(InvalidRequest, match=r"metrics\.0\.grader: a grader object"):
        load_config(tmp_path / "e.yaml")


# --- the command line -----------------------------------------------------------------------

def test_cli_validate_and_run(tmp_path, capsys, home):
    from tests.helpers import run_cli

    good = tmp_path / "g.json"
    good.write_text(json.dumps(OPENAI_MULTI))
    code, out, err = run_cli(capsys, "graders", "validate", str(good))
    assert code == 0 and out.strip() == "ok: m (multi): name (text_similarity), email " \
                                        "(string_check)"
    code, out, _ = run_cli(capsys, "graders", "validate", str(good), "--json")
    assert code == 0 and json.loads(out) == {"grader": OPENAI_MULTI}
    sample, item = '{"name": "Ann", "email": "a@x"}', '{"name": "Ann", "email": "b@x"}'
    code, out, _ = run_cli(capsys, "graders", "run", str(good), "--sample", sample,
                           "--item", item, "--json")
    got = json.loads(out)
    assert code == 0 and got["reward"] == 0.5 and got["sub_rewards"] == {"name": 1.0,
                                                                         "email": 0.0}
    code, out, _ = run_cli(capsys, "graders", "run", str(good), "--sample", "plain text",
                           "--item", item)
    assert code == 0 and out.splitlines()[0].startswith("reward 0  m (multi, ")
    assert "  sample_parse_error: name.sample_parse" not in out
    assert "sample_parse_error" in out


@pytest.mark.parametrize("argv,words", [
    (["validate", "{bad}"], "{bad}: graders.email.operation: Input should be 'eq'"),
    (["run", "{bad}", "--sample", "x"], "{bad}: graders.email.operation: "),
    (["run", "{good}", "--sample", "x", "--item", "{nope"], "--item: not JSON"),
    (["run", "{good}", "--sample", "x", "--item", "[1]"], "--item: must be a JSON object"),
])
def test_cli_errors_name_the_field(tmp_path, capsys, home, argv, words):
    from tests.helpers import run_cli

    good, bad = tmp_path / "g.json", tmp_path / "bad.yaml"
    good.write_text(json.dumps(OPENAI_MULTI))
    import yaml

    spec = json.loads(json.dumps(OPENAI_MULTI))
    spec["graders"]["email"]["operation"] = "neq"
    bad.write_text(yaml.safe_dump(spec))
    argv = [str(good) if a == "{good}" else str(bad) if a == "{bad}" else a for a in argv]
    code, out, err = run_cli(capsys, "graders", *argv)
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert words.replace("{bad}", str(bad)) in lines[0]


# --- HTTP: OpenAI's endpoints, with the openai SDK ------------------------------------------

@pytest.fixture
def api(tiny_long):  # registers tiny-long in the catalog of a fresh home
    import openai
    from fastapi.testclient import TestClient

    from afinar.server.app import create_app

    http = TestClient(create_app(auth=False))
    return http, openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http,
                               max_retries=0)


def test_http_run_and_validate_with_the_sdk(api):
    http, sdk = api
    r = sdk.fine_tuning.alpha.graders.run(grader=OPENAI_MULTI, item={"name": "Ann",
                                                                      "email": "a@x"},
                                          model_sample='{"name": "Ann", "email": "a@x"}')
    assert r.reward == 1.0 and r.sub_rewards == {"name": 1.0, "email": 1.0}
    assert r.metadata.name == "m" and r.metadata.type == "multi"
    assert r.metadata.errors.invalid_variable_error is False
    assert r.metadata.scores == {"name": 1.0, "email": 1.0}
    v = sdk.fine_tuning.alpha.graders.validate(grader=OPENAI_MULTI)
    assert v.grader.name == "m" and v.grader.calculate_output == "(name + email) / 2"
    body = http.post("/v1/fine_tuning/alpha/graders/run", json={
        "grader": sc(), "model_sample": "blue"}).json()  # item omitted: {}
    assert set(body) == {"reward", "sub_rewards", "model_grader_token_usage_per_model",
                         "metadata"}
    assert set(body["metadata"]) == {"name", "type", "execution_time", "scores",
                                     "sampled_model_name", "token_usage", "errors"}
    assert body["reward"] == 0.0 and body["metadata"]["errors"]["invalid_variable_error"]
    assert body["metadata"]["errors"]["invalid_variable_error_details"] == \
        "item.label: no such variable"
    assert all(f"{k}_error" in body["metadata"]["errors"] for k in
               ("formula_parse", "sample_parse", "python_grader_runtime", "model_grader_parse"))


def test_http_run_with_a_model_grader_reports_token_usage(api):
    http, _ = api
    body = http.post("/v1/fine_tuning/alpha/graders/run", json={
        "grader": MODEL_SPECS["label_model"], "model_sample": "blue", "item": {"q": "sky?"}})
    assert body.status_code == 200, body.text
    got = body.json()
    assert not any(v for k, v in got["metadata"]["errors"].items()
                   if k != "model_grader_parse_error" and isinstance(v, bool)), got
    if not got["metadata"]["errors"]["model_grader_parse_error"]:
        usage = got["model_grader_token_usage_per_model"]["tiny-long"]
        assert usage["prompt_tokens"] > 0 and got["metadata"]["sampled_model_name"] == "tiny-long"
        assert got["metadata"]["token_usage"] == usage and got["reward"] in (0.0, 1.0)


@pytest.mark.parametrize("path,body,param", [
    ("run", {"grader": {**sc(), "operation": "neq"}, "model_sample": "x"}, "grader.operation"),
    ("run", {"grader": sc()}, "model_sample"),
    ("run", {"grader": sc(), "model_sample": 3}, "model_sample"),
    ("run", {"grader": "exact", "model_sample": "x"}, "grader"),
    ("run", {"grader": sc(), "model_sample": "x", "item": [1]}, "item"),
    ("run", {"grader": sc(), "model_sample": "x", "extra": 1}, "extra"),
    ("run", {"grader": {**MODEL_SPECS["label_model"], "model": "gpt-4o"}, "model_sample": "x"},
     "grader.model"),
    ("validate", {"grader": {"type": "multi", "name": "m", "calculate_output": "a +",
                             "graders": {"a": sc()}}}, "grader.calculate_output"),
    ("validate", {"grader": {"type": "python", "name": "p", "source": "def f(:"}},
     "grader.source"),
    ("validate", {}, "grader"),
])
def test_http_malformed_bodies_are_openai_400s(api, path, body, param):
    http, _ = api
    r = http.post(f"/v1/fine_tuning/alpha/graders/{path}", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err
    assert err["message"]


def test_http_judge_models_of_another_project_are_not_found(api, monkeypatch):
    from afinar.server import routes_graders

    http, _ = api
    monkeypatch.setattr(routes_graders, "require_model", _refuse)
    r = http.post("/v1/fine_tuning/alpha/graders/validate",
                  json={"grader": MODEL_SPECS["label_model"]})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def _refuse(request, model_id):
    from afinar.errors import NotFound

    raise NotFound(f"The model {model_id!r} does not exist", param="model")
