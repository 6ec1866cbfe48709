"""Graders (afinar.graders): table-driven over every registered type, templates, the multi
formula, specs in OpenAI's shape from YAML and JSON, and bad specs refused naming the field."""

from __future__ import annotations

import json

import pytest

from afinar.errors import InvalidRequest
from afinar.graders import GRADERS, GradeResult, Grader, load_grader, sample_from_text


def sc(input="{{ sample.output_text }}", reference="{{ item.label }}", operation="eq",
       name="exact"):
    return {"type": "string_check", "name": name, "input": input, "reference": reference,
            "operation": operation}


def ts(metric, input="{{ sample.output_text }}", reference="{{ item.ref }}", **more):
    return {"type": "text_similarity", "name": metric, "input": input, "reference": reference,
            "evaluation_metric": metric, **more}


CAT = "the cat sat on the mat"
# (spec, sample text, item, expected score, abs tolerance): two outcomes at least per type.
CASES = [
    (sc(), "blue", {"label": "blue"}, 1.0, 0),
    (sc(), "Blue", {"label": "blue"}, 0.0, 0),
    (sc(operation="ne"), "green", {"label": "blue"}, 1.0, 0),
    (sc(operation="ne"), "blue", {"label": "blue"}, 0.0, 0),
    (sc(operation="like"), "the sky is blue", {"label": "blue"}, 1.0, 0),
    (sc(operation="like"), "the sky is Blue", {"label": "blue"}, 0.0, 0),
    (sc(operation="ilike"), "the sky is BLUE", {"label": "blue"}, 1.0, 0),
    (sc(operation="ilike"), "the sky is green", {"label": "blue"}, 0.0, 0),
    (ts("fuzzy_match"), "the cat sat on teh mat", {"ref": CAT}, 0.95, 0.05),
    (ts("fuzzy_match"), "xyz", {"ref": CAT}, 0.0, 0.2),
    (ts("bleu"), CAT, {"ref": CAT}, 1.0, 1e-9),
    (ts("bleu"), "a dog sat on a mat", {"ref": CAT}, 0.0955, 1e-3),
    (ts("bleu"), "red car", {"ref": "red car"}, 1.0, 1e-9),  # shorter than 4 words
    (ts("gleu"), CAT, {"ref": CAT}, 1.0, 1e-9),
    (ts("gleu"), "a dog sat on a mat", {"ref": CAT}, 2 / 9, 1e-6),
    (ts("meteor"), CAT, {"ref": CAT}, 0.9977, 1e-3),
    (ts("meteor"), "dogs run", {"ref": CAT}, 0.0, 1e-9),
    (ts("rouge_1"), "a dog sat on a mat", {"ref": CAT}, 0.5, 1e-9),
    (ts("rouge_2"), "the cat sat", {"ref": CAT}, 2 * (2 / 2 * 2 / 5) / (2 / 2 + 2 / 5), 1e-9),
    (ts("rouge_3"), CAT, {"ref": CAT}, 1.0, 1e-9),
    (ts("rouge_4"), "the cat sat", {"ref": CAT}, 0.0, 1e-9),
    (ts("rouge_5"), CAT, {"ref": CAT}, 1.0, 1e-9),
    (ts("rouge_l"), "the cat on mat", {"ref": CAT}, 0.8, 1e-9),
    (ts("rouge_l"), "dogs run", {"ref": CAT}, 0.0, 1e-9),
    ({"type": "multi", "name": "m", "calculate_output": "(name + email) / 2",
      "graders": {"name": ts("rouge_l", "{{sample.output_json.name}}", "{{item.name}}"),
                  "email": sc("{{sample.output_json.email}}", "{{item.email}}")}},
     '{"name": "Ann Lee", "email": "ann@x.org"}', {"name": "Ann", "email": "ann@x.org"},
     (2 / 3 + 1) / 2, 1e-9),
    ({"type": "multi", "name": "m", "calculate_output": "min(a, 0.5) * 2 - abs(-1) + 1",
      "graders": {"a": sc()}}, "no", {"label": "yes"}, 0.0, 1e-9),
]
# Types whose cases need a model or a process (below): named here so the table test knows.
ELSEWHERE = {"python", "score_model", "label_model"}


@pytest.mark.parametrize("spec,text,item,score,tol", CASES)
def test_grader_cases(spec, text, item, score, tol):
    r = load_grader(spec).grade(sample_from_text(text), item)
    assert isinstance(r, GradeResult)
    assert r.score == pytest.approx(score, abs=tol)
    assert not any(r.errors.values()), r.metadata
    assert r.metadata["name"] == spec["name"] and r.metadata["type"] == spec["type"]


@pytest.mark.parametrize("kind", GRADERS.names())
def test_every_registered_grader_type_has_cases(kind):
    """A new grader type (built in or a plugin) needs rows in CASES, two outcomes at least, or a
    test of its own named in ELSEWHERE."""
    cls = GRADERS.get(kind)
    assert issubclass(cls, Grader) and cls.type == kind
    rows = [c for c in CASES if c[0]["type"] == kind]
    assert rows or kind in ELSEWHERE, f"grader type {kind} has no rows in CASES"
    if rows:
        assert len({c[3] for c in rows}) >= 2, f"grader type {kind}: rows of one outcome only"


def test_every_text_similarity_metric_has_a_case():
    from afinar.graders.text_similarity import METRICS

    covered = {c[0]["evaluation_metric"] for c in CASES if c[0]["type"] == "text_similarity"}
    assert set(METRICS) - covered <= {"cosine"}  # cosine: test_cosine_on_embeddings


def test_public_interface():
    g = load_grader(sc())
    assert (g.name, g.type) == ("exact", "string_check")
    rs = g.grade_many([sample_from_text("a"), sample_from_text("b")],
                      [{"label": "a"}, {"label": "a"}])
    assert [r.score for r in rs] == [1.0, 0.0]
    s = sample_from_text('{"a": [1]}')
    assert s["output_text"] == '{"a": [1]}' and s["output_json"] == {"a": [1]}
    assert s["output_tools"] == [] and s["choices"][0]["message"]["content"] == '{"a": [1]}'
    assert sample_from_text("not json")["output_json"] is None
    assert sample_from_text('{"a": 1}', {"type": "text"})["output_json"] is None
    assert g.grade("a", {"label": "a"}).score == 1.0  # a plain string is a sample's text


# --- templates ------------------------------------------------------------------------------

@pytest.mark.parametrize("template,text,item,rendered", [
    ("{{ item.x }}", "", {"x": "hi"}, "hi"),
    ("{{item.x}}-{{ sample.output_text }}", "out", {"x": 3}, "3-out"),
    ("{{sample.output_json.a[0].b}}", '{"a": [{"b": "deep"}]}', {}, "deep"),
    ("{{ item['odd key'] }}", "", {"odd key": "k"}, "k"),
    ("{{ item.obj }}", "", {"obj": {"k": [1, 2]}}, '{"k": [1, 2]}'),
    ("{{ item.list[-1] }}", "", {"list": ["a", "z"]}, "z"),
    ("plain text", "", {}, "plain text"),
])
def test_templates_render(template, text, item, rendered):
    g = load_grader(sc(input=template, reference=rendered))
    r = g.grade(sample_from_text(text), item)
    assert r.score == 1.0, r.metadata


@pytest.mark.parametrize("template,text,item,flag", [
    ("{{ item.missing }}", "x", {"x": 1}, "invalid_variable_error"),
    ("{{ item.a[3] }}", "x", {"a": [1]}, "invalid_variable_error"),
    ("{{ item.a.b }}", "x", {"a": "str"}, "invalid_variable_error"),
    ("{{ sample.output_json.a }}", "not json", {}, "sample_parse_error"),
    ("{{ sample.nope }}", "x", {}, "invalid_variable_error"),
])
def test_unknown_variables_score_zero_with_a_flag(template, text, item, flag):
    r = load_grader(sc(input=template, operation="ne", reference="never")).grade(
        sample_from_text(text), item)
    assert r.score == 0.0 and r.errors[flag]
    assert sum(r.errors.values()) == 1 and r.error == flag[:-len("_error")]
    assert r.metadata["error_details"]


@pytest.mark.parametrize("spec,param,words", [
    (sc(operation="neq"), "grader.operation", "'eq', 'ne'"),
    ({**sc(), "type": "string_chek"}, "grader.type", "did you mean 'string_check'"),
    ({k: v for k, v in sc().items() if k != "reference"}, "grader.reference", "required"),
    ({**sc(), "extra": 1}, "grader.extra", "not permitted"),
    (sc(input="{{ foo.x }}"), "grader.input", "must start with item. or sample."),
    (sc(input="{{ item.x"), "grader.input", "unbalanced"),
    (sc(input="{{ item.x + 1 }}"), "grader.input", "cannot read template variable"),
    ({**sc(), "name": 3}, "grader.name", "string"),
    (ts("cosine_sim"), "grader.evaluation_metric", "'fuzzy_match'"),
    ({"type": "multi", "name": "m", "calculate_output": "a + c", "graders": {"a": sc()}},
     "grader.calculate_output", "unknown variable 'c'"),
    ({"type": "multi", "name": "m", "calculate_output": "__import__('os')",
      "graders": {"a": sc()}}, "grader.calculate_output", "unknown function"),
    ({"type": "multi", "name": "m", "calculate_output": "a.real", "graders": {"a": sc()}},
     "grader.calculate_output", "Attribute is not allowed"),
    ({"type": "multi", "name": "m", "calculate_output": "(a", "graders": {"a": sc()}},
     "grader.calculate_output", "not a formula"),
    ({"type": "multi", "name": "m", "calculate_output": "log(a, 2, 3)", "graders": {"a": sc()}},
     "grader.calculate_output", "log takes 1 to 2"),
    ({"type": "multi", "name": "m", "calculate_output": "a",
      "graders": {"a": {**sc(), "operation": "x"}}}, "grader.graders.a.operation", "'eq'"),
    ({"type": "multi", "name": "m", "calculate_output": "a",
      "graders": {"a": {"type": "multi", "name": "n", "calculate_output": "b",
                        "graders": {"b": sc()}}}}, "grader.graders.a.type", "do not nest"),
    ({"type": "multi", "name": "m", "calculate_output": "1", "graders": {}}, "grader.graders",
     "at least one"),
    ([sc()], "grader", "an object"),
])
def test_bad_specs_name_the_field(spec, param, words):
    with pytest.raises(InvalidRequest) as e:
        load_grader(spec)
    assert e.value.param == param
    assert e.value.message.startswith(param + ": ") and words in e.value.message


@pytest.mark.parametrize("formula,a,b,value", [
    ("a + b", 1.0, 0.5, 1.5),
    ("a - b * 2", 1.0, 0.5, 0.0),
    ("2 ^ 3 * a", 1.0, 0.0, 8.0),  # ^ is a power and binds tighter than *
    ("-b ^ 2", 0.0, 0.5, -0.25),
    ("max(a, b) / min(a, b, 4)", 1.0, 0.5, 2.0),
    ("floor(b * 3) + ceil(b)", 0.0, 0.5, 2.0),
    ("sqrt(4) + exp(0) + log(1) + log(8, 2)", 0.0, 0.0, 6.0),
])
def test_multi_formula(formula, a, b, value):
    g = load_grader({"type": "multi", "name": "m", "calculate_output": formula,
                     "graders": {"a": sc("{{item.a}}", "1"), "b": ts(
                         "rouge_1", "{{item.b}}", "x w")}})
    r = g.grade(sample_from_text(""), {"a": "1" if a else "0", "b": "x z" if b else "q z"})
    assert r.sub_rewards == pytest.approx({"a": a, "b": b})
    assert r.score == pytest.approx(value)
    assert r.metadata["scores"] == r.sub_rewards


def test_multi_formula_failing_on_numbers_scores_zero():
    g = load_grader({"type": "multi", "name": "m", "calculate_output": "1 / a",
                     "graders": {"a": sc()}})
    r = g.grade(sample_from_text("x"), {"label": "y"})
    assert r.score == 0.0 and r.errors["other_error"]
    assert "ZeroDivisionError" in r.metadata["error_details"]["calculate_output"]


def test_multi_carries_its_sub_graders_flags():
    g = load_grader({"type": "multi", "name": "m", "calculate_output": "a + b",
                     "graders": {"a": sc(), "b": sc(input="{{ item.nope }}")}})
    r = g.grade(sample_from_text("x"), {"label": "x"})
    assert r.sub_rewards == {"a": 1.0, "b": 0.0} and r.score == 1.0
    assert r.errors["invalid_variable_error"] and "b.invalid_variable" in \
        r.metadata["error_details"]


def test_multi_takes_a_list_or_one_grader_keyed_by_name():
    one = load_grader({"type": "multi", "name": "m", "calculate_output": "exact * 2",
                       "graders": sc()})
    assert one.grade("z", {"label": "z"}).score == 2.0
    many = load_grader({"type": "multi", "name": "m", "calculate_output": "exact + other",
                        "graders": [sc(), sc(name="other", operation="ne")]})
    assert many.grade("z", {"label": "z"}).sub_rewards == {"exact": 1.0, "other": 0.0}


# --- files ----------------------------------------------------------------------------------

OPENAI_MULTI = {  # FIELD-NOTES-2 §2, as OpenAI's API accepts it
    "type": "multi", "name": "m", "calculate_output": "(name + email) / 2",
    "graders": {"name": {"type": "text_similarity", "name": "n",
                         "input": "{{sample.output_json.name}}", "reference": "{{item.name}}",
                         "evaluation_metric": "fuzzy_match"},
                "email": {"type": "string_check", "name": "e",
                          "input": "{{sample.output_json.email}}",
                          "reference": "{{item.email}}", "operation": "eq"}}}


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_specs_load_from_yaml_and_json_files(tmp_path, suffix):
    import yaml

    p = tmp_path / f"g{suffix}"
    p.write_text(json.dumps(OPENAI_MULTI) if suffix == ".json" else yaml.safe_dump(OPENAI_MULTI))
    g = load_grader(p)
    assert g.to_dict() == OPENAI_MULTI
    r = g.grade(sample_from_text('{"name": "Ann", "email": "a@x"}'),
                {"name": "Ann", "email": "a@x"})
    assert r.score == 1.0 and r.sub_rewards == {"name": 1.0, "email": 1.0}
    assert load_grader(str(p)).name == "m"


def test_bad_files_name_the_file_and_field(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("type: string_check\nname: x\ninput: a\nreference: b\noperation: neq\n")
    with pytest.raises(InvalidRequest) as e:
        load_grader(bad)
    assert e.value.message.startswith(f"{bad}: operation: ") and e.value.param == "operation"
    nested = tmp_path / "m.json"
    nested.write_text(json.dumps({**OPENAI_MULTI, "graders": {
        **OPENAI_MULTI["graders"], "email": {**OPENAI_MULTI["graders"]["email"],
                                             "operation": "neq"}}}))
    with pytest.raises(InvalidRequest, match=rf"^{nested}: graders\.email\.operation: "):
        load_grader(nested)
    broken = tmp_path / "b.json"
    broken.write_text('{"type": "string_check",\n "name": }')
    with pytest.raises(InvalidRequest, match=rf"^{broken}:2: not JSON"):
        load_grader(broken)
    yml = tmp_path / "b.yaml"
    yml.write_text("type: [\n")
    with pytest.raises(InvalidRequest, match=rf"^{yml}:\d+: not YAML"):
        load_grader(yml)
    with pytest.raises(InvalidRequest, match="grader file not found"):
        load_grader(tmp_path / "none.yaml")
    (tmp_path / "g.txt").write_text(json.dumps(sc()))
    with pytest.raises(InvalidRequest, match=r"\.yaml, \.yml or \.json"):
        load_grader(tmp_path / "g.txt")


# --- python ---------------------------------------------------------------------------------

SOURCE = '''
import socket

def grade(sample, item):
    kind = item.get("kind")
    if kind == "ok":
        return len(sample["output_text"]) / 10
    if kind == "loop":
        while True:
            pass
    if kind == "memory":
        block = bytearray(1 << 30)  # 1 GiB, over the limit below
        return float(len(block))
    if kind == "raise":
        raise ValueError("nope")
    if kind == "text":
        return "1.0"
    if kind == "connect":
        socket.create_connection(("127.0.0.1", item["port"]), timeout=2)
        return 1.0
    if kind == "print":
        print("to stderr, not the protocol")
        return 1
'''


@pytest.fixture
def python_grader():
    from afinar.graders.python import SandboxLimits

    g = load_grader({"type": "python", "name": "p", "source": SOURCE, "image_tag": "2025-05-08"})
    g.limits = SandboxLimits(time_s=3, memory_bytes=512 << 20)
    return g


@pytest.fixture
def listener():
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    socket.create_connection(("127.0.0.1", port), timeout=2).close()  # reachable from here
    yield port
    srv.close()


def _runtime(r, words):
    assert r.score == 0.0 and r.errors["python_grader_runtime_error"], r.metadata
    assert words in r.metadata["error_details"]["python_grader_runtime"]


def test_python_grader_scores_and_fails_to_zero(python_grader, listener):
    kinds = ["ok", "raise", "text", "loop", "ok", "memory", "connect", "print"]
    rs = python_grader.grade_many(["abcd"] * len(kinds),
                                  [{"kind": k, "port": listener} for k in kinds])
    assert rs[0].score == pytest.approx(0.4) and rs[0].error is None
    _runtime(rs[1], "ValueError: nope (line 15)")
    _runtime(rs[2], "grade returned str, not a float")
    _runtime(rs[3], "time limit of 3 s exceeded")  # killed; the next sample gets a new process
    assert rs[4].score == pytest.approx(0.4) and rs[4].error is None
    _runtime(rs[5], "MemoryError")
    _runtime(rs[6], "Network is unreachable" if rs[0].metadata["network_isolation"] ==
             "namespace" else "no network")
    assert rs[7].score == 1.0
    assert python_grader.grade("abcdefgh", {"kind": "ok"}).score == pytest.approx(0.8)


def test_python_grader_without_a_namespace_blocks_sockets_by_audit_hook(python_grader,
                                                                         listener):
    from dataclasses import replace

    python_grader.limits = replace(python_grader.limits, network="audit_hook")
    r = python_grader.grade("x", {"kind": "connect", "port": listener})
    _runtime(r, "the grader sandbox has no network")
    ok = python_grader.grade("xy", {"kind": "ok"})
    assert ok.score == pytest.approx(0.2) and ok.metadata["network_isolation"] == "audit_hook"


@pytest.mark.parametrize("source,words", [
    ("def grade(sample, item):\n    return 1 +\n", "line 2: invalid syntax"),
    ("def other(sample, item):\n    return 1\n", "defines no top-level grade"),
    ("x = 1\n" + "#" * (256 * 1024), "under 256 kB"),
])
def test_python_grader_source_is_checked_when_loaded(source, words):
    with pytest.raises(InvalidRequest) as e:
        load_grader({"type": "python", "name": "p", "source": source})
    assert e.value.param == "grader.source" and words in e.value.message


def test_python_grader_whose_code_fails_to_run(python_grader):
    g = load_grader({"type": "python", "name": "p",
                     "source": "import no_such_module\ndef grade(s, i):\n    return 1.0\n"})
    rs = g.grade_many(["a", "b"], [{}, {}])
    for r in rs:
        _runtime(r, "ModuleNotFoundError")


# --- score_model / label_model (the tiny random model: any verdict, but a valid one) --------

JUDGE_INPUT = [{"role": "developer", "content": "You check answers."},
               {"role": "user", "content": [{"type": "input_text", "text": "Q: {{ item.q }}"},
                                            {"type": "output_text",
                                             "text": "A: {{ sample.output_text }}"}]}]
MODEL_SPECS = {
    "score_model": {"type": "score_model", "name": "s", "model": "tiny-long",
                    "input": JUDGE_INPUT, "range": [0, 10],
                    "sampling_params": {"max_completions_tokens": 300, "seed": 1}},
    "label_model": {"type": "label_model", "name": "l", "model": "tiny-long",
                    "input": JUDGE_INPUT, "labels": ["good", "bad", "unsure"],
                    "passing_labels": ["good"]},
}


def _valid_verdict(r, kind, model="tiny-long"):
    if r.errors["model_grader_parse_error"]:
        assert r.score == 0.0
        return
    assert r.error is None, r.metadata
    if kind == "score_model":
        assert 0.0 <= r.score <= 10.0
    else:
        assert r.metadata["label"] in ("good", "bad", "unsure")
        assert r.score == float(r.metadata["label"] == "good")
    usage = r.metadata["token_usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert r.metadata["sampled_model_name"] == model


@pytest.mark.parametrize("kind", sorted(MODEL_SPECS))
def test_model_graders_give_a_valid_verdict_deterministically(kind, tiny_long):
    g = load_grader(MODEL_SPECS[kind])
    first = g.grade(sample_from_text("blue"), {"q": "What colour is the sky?"})
    _valid_verdict(first, kind)
    again = g.grade_many([sample_from_text("blue")], [{"q": "What colour is the sky?"}])[0]
    assert (again.score, again.errors, again.metadata.get("label")) == \
        (first.score, first.errors, first.metadata.get("label"))
    missing = g.grade(sample_from_text("blue"), {})  # no model work for a missing variable
    assert missing.errors["invalid_variable_error"] and missing.metadata["token_usage"] is None


def test_model_graders_use_the_loader_they_are_given(tiny_long):
    asked = []
    g = load_grader({**MODEL_SPECS["label_model"], "model": "someone-elses"},
                    model_loader=lambda m: asked.append(m) or tiny_long)
    _valid_verdict(g.grade("blue", {"q": "sky?"}), "label_model", "someone-elses")
    assert asked == ["someone-elses"]


def test_model_graders_cut_by_the_token_budget_flag_a_parse_error(tiny_long):
    g = load_grader({**MODEL_SPECS["score_model"], "sampling_params": {
        "max_completions_tokens": 3}})
    r = g.grade("blue", {"q": "sky?"})
    assert r.score == 0.0 and r.errors["model_grader_parse_error"]
    assert "max_tokens" in r.metadata["error_details"]["model_grader_parse"]


def test_model_grader_whose_prompt_overflows_the_model_flags_a_server_error(tiny_long):
    g = load_grader(MODEL_SPECS["label_model"])
    r = g.grade("blue " * 3000, {"q": "sky?"})
    assert r.score == 0.0 and r.errors["model_grader_server_error"]


@pytest.mark.parametrize("change,param,words", [
    ({"model": "no-such-model"}, "grader.model", "no-such-model"),
    ({"labels": ["a", "b"], "passing_labels": ["c"]}, "grader", "among the labels"),
    ({"input": [{"role": "user", "content": {"type": "input_image", "image_url": "x"}}]},
     "grader.input.0.content", "read text only"),
    ({"input": [{"role": "robot", "content": "x"}]}, "grader.input.0.role", "'user'"),
    ({"input": []}, "grader.input", "at least 1"),
    ({"input": [{"role": "user", "content": "{{ items.q }}"}]}, "grader.input.0.content",
     "must start with item."),
])
def test_bad_model_grader_specs(change, param, words, home):
    with pytest.raises(InvalidRequest) as e:
        load_grader({**MODEL_SPECS["label_model"], **change})
    assert e.value.param == param and words in e.value.message, e.value.message


def test_score_model_range_is_checked(home):
    with pytest.raises(InvalidRequest, match=r"^grader\.range: .*low < high"):
        load_grader({**MODEL_SPECS["score_model"], "range": [1, 0]})


def test_judge_models_default_to_the_settings_model(home):
    from afinar.settings import get_settings

    spec = {k: v for k, v in MODEL_SPECS["label_model"].items() if k != "model"}
    assert load_grader(spec).model_id == get_settings().default_model


# --- cosine ---------------------------------------------------------------------------------

def test_cosine_on_embeddings(home):
    g = load_grader(ts("cosine"))
    same = g.grade("The cat sat on the mat.", {"ref": "The cat sat on the mat."})
    near = g.grade("A cat is sitting on a rug.", {"ref": "The cat sat on the mat."})
    far = g.grade("Quarterly tax filings are due in April.", {"ref": "The cat sat on the mat."})
    assert same.score == pytest.approx(1.0, abs=1e-4)
    assert far.score < near.score < same.score
    assert g.range == (-1.0, 1.0)
