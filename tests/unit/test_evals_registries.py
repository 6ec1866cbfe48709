"""The evaluation's two registries: every registered strategy (table-driven over STRATEGIES)
answers a case on the tiny model from a minimal spec, or is refused with one clear error naming
what it needs; unknown strategy and metric names are the registry's one error, placed by the
config at its file and field; ``afinar eval run --help`` lists both registries."""

from __future__ import annotations

import json
import shutil

import pytest

from afinar.errors import InvalidRequest
from afinar.evals.cases import Case
from afinar.evals.config import load_config, parse_config
from afinar.evals.metrics import METRICS
from afinar.evals.strategies import STRATEGIES, Context, Strategy, StrategySpec, build, expand
from tests.helpers import home_at, run_cli

QUESTION = "How do I reset the router?"
PASSAGES = ["To reset the router, hold the reset button for ten seconds.",
            "Invoices are sent on the first day of each month."]

# type -> (what a minimal spec adds, the error without it, the field that error names). A
# fine-tuned strategy answers with the model it is given; here the tiny base model stands in for
# one (tests/unit/test_evals_run.py gives them a real LoRA job's model).
NEEDS = {
    "base": ({}, None, None),
    "few_shot": ({"train_file": "TRAIN"}, "needs a train_file", "train_file"),
    "rag": ({"knowledge_base": "help"}, "needs a knowledge_base", "knowledge_base"),
    "fine_tuned": ({"model": "tiny-long"}, "needs a fine-tuned model", "model"),
    "fine_tuned_rag": ({"model": "tiny-long", "knowledge_base": "help"},
                       "needs a fine-tuned model", "model"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_template):
    """A home with the tiny model (2,048-token window), a two-passage knowledge base and a
    three-example training file, shared by the module."""
    from afinar.models import Catalog, load_causal_lm
    from afinar.rag.kb import KnowledgeBases

    root = tmp_path_factory.mktemp("registries")
    with home_at(root / "home"):
        folder = shutil.copytree(tiny_model_template, root / "tiny-long")
        cfg = json.loads((folder / "config.json").read_text())
        cfg["max_position_embeddings"] = 2048
        (folder / "config.json").write_text(json.dumps(cfg))
        Catalog().add("tiny-long", folder)
        docs = root / "docs"
        docs.mkdir()
        for i, text in enumerate(PASSAGES):
            (docs / f"p{i}.md").write_text(f"# Note {i}\n\n{text}\n")
        KnowledgeBases().create("help")
        KnowledgeBases().add("help", [docs])
        train = root / "train.jsonl"
        train.write_text("".join(json.dumps({"messages": [
            {"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
            for q, a in [("How do I reset the modem?", "Hold reset."),
                         ("When are invoices sent?", "On the 1st."),
                         ("What colour is the light?", "Blue.")]))
        yield {"lm": load_causal_lm(Catalog().get("tiny-long")), "train": str(train),
               "root": root}


def _context(world, loaded: list[str]) -> Context:
    def load(model_id: str):
        loaded.append(model_id)
        if model_id != "tiny-long":
            raise AssertionError(f"asked for {model_id}")
        return world["lm"]

    return Context(load=load, default_model="tiny-long", generation={"max_tokens": 4})


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_registered_strategy(name, world):
    """A new strategy (built in or from a plugin) is covered as soon as it registers: it needs a
    row in NEEDS, and then answers from its minimal spec."""
    assert name in NEEDS, f"strategy {name} has no row in NEEDS"
    cls = STRATEGIES.get(name)
    assert issubclass(cls, Strategy)
    adds, error, field = NEEDS[name]
    adds = {k: world["train"] if v == "TRAIN" else v for k, v in adds.items()}
    loaded: list[str] = []
    ctx = _context(world, loaded)
    if error:
        with pytest.raises(InvalidRequest) as e:
            build(StrategySpec(type=name), ctx)
        assert error in e.value.message and e.value.param == field
    st = build(StrategySpec(type=name, **adds), ctx)
    assert type(st) is cls and st.type == name and st.name.startswith(name)
    case = Case("line-1", 1, [{"role": "user", "content": QUESTION}], "hold the button")
    p = st.answer(case)
    assert p.error is None and loaded and set(loaded) == {"tiny-long"}
    assert p.prompt_tokens > 0 and 0 < p.completion_tokens <= 4
    if cls.uses_kb:
        assert p.sources and "reset button" in p.sources[0]["text"]
        assert p.added_tokens > 0
    else:
        assert p.sources is None
    if name == "few_shot":
        assert p.added_tokens > 0  # the training examples went into the prompt
    # fine-tuned strategies take several models (one column each); the others take one
    many = StrategySpec(type=name, models=["tiny-long", "tiny-long:ckpt"], **{
        k: v for k, v in adds.items() if k != "model"})
    if cls.fine_tuned:
        assert [s.model for s in expand([many])] == ["tiny-long", "tiny-long:ckpt"]
    else:
        with pytest.raises(InvalidRequest, match=f"strategy {name} takes one model"):
            expand([many])


def test_unknown_names_are_the_registry_error_at_their_field(tmp_path):
    base = {"test_file": "test.jsonl"}
    with pytest.raises(InvalidRequest) as e:
        parse_config({**base, "strategies": ["base", "bse"]})
    assert e.value.message == (f"options: strategies.1.type: unknown strategy 'bse' (did you "
                               f"mean 'base'?); known: {', '.join(STRATEGIES.names())}")
    assert e.value.param == "strategies.1.type"
    with pytest.raises(InvalidRequest) as e:
        parse_config({**base, "metrics": ["token_f1", "rouge-l"]})
    assert e.value.message == (f"options: metrics.1: unknown metric 'rouge-l' (did you mean "
                               f"'rouge_l'?); known: {', '.join(METRICS.names())}")
    with pytest.raises(InvalidRequest, match="metrics.0: a metric with options needs its name"):
        parse_config({**base, "metrics": [{"labels": ["a", "b"]}]})
    yaml_file = tmp_path / "eval.yaml"
    yaml_file.write_text("test_file: test.jsonl\nmetrics: [{name: bleu}]\n")
    with pytest.raises(InvalidRequest, match=f"^{yaml_file}: metrics.0: unknown metric 'bleu'"):
        load_config(yaml_file)
    # every registered name is accepted, with the options it needs checked later, when built
    cfg = parse_config({**base, "strategies": STRATEGIES.names(), "metrics": METRICS.names()})
    assert [s.type for s in cfg.strategies] == STRATEGIES.names()
    assert cfg.metric_names() == METRICS.names()


def test_fine_tuned_models_from_the_cli_go_to_the_fine_tuned_strategies():
    cfg = parse_config({"test_file": "t.jsonl", "strategies": STRATEGIES.names()})
    out = cfg.with_fine_tuned(["ft:a", "ft:b"])
    for s in out.strategies:
        assert s.models == (["ft:a", "ft:b"] if STRATEGIES.get(s.type).fine_tuned else [])


def test_eval_run_help_lists_the_registries(capsys):
    code, out, _ = run_cli(capsys, "eval", "run", "--help")
    assert code == 0
    for name in STRATEGIES.names() + METRICS.names():
        assert name in out, name
    assert max(len(line) for line in out.splitlines()) <= 80
