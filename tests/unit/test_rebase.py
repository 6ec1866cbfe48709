"""``afinar tune rebase`` on tiny models: a finished tiny job's recipe (data by hash, method,
hyperparameters as asked, seed, suffix) re-run on a second tiny base with another chat template,
the data encoded with that template; refused, before any job exists, when the new template
cannot express the data (system messages on a template without a system role); the two
fine-tunes compared by one evaluation run with the advisor's verdict."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from afinar.errors import InvalidRequest
from afinar.models import Catalog
from afinar.models.finetuned import read_manifest
from afinar.store.files import Files
from afinar.tuning import Jobs
from afinar.tuning.rebase import TemplateCannotExpress, plan, rebase, template_gaps
from afinar.tuning.runner import JobRunner
from tests.helpers import run_cli

# Another markup than the tiny model's ChatML, with a system role; turns end with <|endoftext|>
HASH_TEMPLATE = (
    "{% for m in messages %}{{ '### ' + m['role'] + ':\\n' + m['content'] + '<|endoftext|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '### assistant:\\n' }}{% endif %}")
# Templates without a system role: one drops system messages silently, one refuses them (Gemma)
DROPS_SYSTEM = (
    "{% for m in messages %}{% if m['role'] != 'system' %}{{ '### ' + m['role'] + ':\\n' + "
    "m['content'] + '<|endoftext|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### assistant:\\n' }}{% endif %}")
REFUSES_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}" + HASH_TEMPLATE)
ROWS = [{"messages": [{"role": "system", "content": "You answer in colours."},
                      {"role": "user", "content": f"question {i}"},
                      {"role": "assistant", "content": "Red, blue and yellow."}]}
        for i in range(12)]
HP = {"n_epochs": 1, "learning_rate_multiplier": 2}  # batch_size and max_seq_len left auto


def base_with_template(template_dir, dest, template: str, context: int = 256):
    from transformers import AutoTokenizer

    folder = shutil.copytree(template_dir, dest)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = template
    tok.save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["max_position_embeddings"] = context
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture
def bases(home, tiny_model_template, tmp_path):
    cat = Catalog()
    cat.add("tiny", tiny_model_template)
    cat.add("tiny-hash", base_with_template(tiny_model_template, tmp_path / "b", HASH_TEMPLATE,
                                            512))
    cat.add("tiny-drops", base_with_template(tiny_model_template, tmp_path / "c", DROPS_SYSTEM))
    cat.add("tiny-refuses", base_with_template(tiny_model_template, tmp_path / "d",
                                               REFUSES_SYSTEM))
    return cat


def run_job(job_id: str) -> str:
    from afinar.settings import get_settings

    return JobRunner(Jobs().get(job_id), get_settings(), "test").run()


def finished_job(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    train = Files().create_from_path(p, "fine-tune")
    job = Jobs().create(model="tiny", training_file=train.id, hyperparameters=HP, seed=7,
                        suffix="colours", method={"type": "lora", "lora": {"r": 4}})
    assert run_job(job.id) == "succeeded", Jobs().get(job.id).error
    return Jobs().get(job.id)


def test_rebase_reruns_the_recipe_on_another_template_and_compares(bases, tmp_path):
    old = finished_job(tmp_path)
    old_manifest = read_manifest(Catalog().get(old.fine_tuned_model).path)
    # refused before any job exists: the template has no system role
    for base in ("tiny-drops", "tiny-refuses"):
        with pytest.raises(TemplateCannotExpress) as e:
            plan(old.id, base)
        assert "no system role" in str(e.value) and "lines 1, 2, 3, 4, 5, ..." in str(e.value)
        assert base in str(e.value) and "train.jsonl" in str(e.value)
    assert len(Jobs().list()) == 1

    # by its model id; the job's file record deleted, its bytes still stored (the same data
    # uploaded again): the recipe finds them by their sha256
    again = Files().create_from_path(tmp_path / "train.jsonl", "fine-tune")
    Files().delete(old.training_file)
    p, new = rebase(old.fine_tuned_model, "tiny-hash")
    assert (new.model, new.seed, new.suffix, new.method) == ("tiny-hash", 7, "colours",
                                                            old.method)
    assert new.info["rebased_from"] == old.id and new.training_file != old.training_file
    assert Files().get(new.training_file).sha256 == old_manifest["datasets"]["training_file"]
    asked = {k: v for k, v in old.hyperparameters.items() if k != "resolved"}
    assert new.hyperparameters == asked  # as asked: auto stays auto
    assert asked["batch_size"] == "auto" and asked["max_seq_len"] is None
    assert p.reports["training_file"].n_examples == 12

    assert run_job(new.id) == "succeeded", Jobs().get(new.id).error
    done = Jobs().get(new.id)
    manifest = read_manifest(Catalog().get(done.fine_tuned_model).path)
    assert manifest["base_model"] == "tiny-hash"
    assert manifest["template_fingerprint"]["template_sha256"] == hashlib.sha256(
        HASH_TEMPLATE.encode()).hexdigest() != old_manifest["template_fingerprint"][
        "template_sha256"]
    assert manifest["datasets"] == old_manifest["datasets"] and manifest["seed"] == 7
    # auto re-resolved for the new base (its context is 512, the old one's 256)
    assert done.hyperparameters["resolved"]["max_seq_len"] == 512
    assert old.hyperparameters["resolved"]["max_seq_len"] == 256

    # the two fine-tunes under one evaluation, with the advisor's verdict
    from afinar.evals.compare import fine_tune_comparison
    from afinar.evals.config import parse_config
    from afinar.evals.runner import run

    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    cfg = parse_config({"test_file": str(test), "strategies": ["base", "fine_tuned"],
                        "metrics": ["token_f1"], "forgetting": False,
                        "generation": {"max_tokens": 6}}, tmp_path)
    cmp = fine_tune_comparison(cfg, old.fine_tuned_model, done.fine_tuned_model)
    assert [s.models for s in cmp.strategies] == [[old.fine_tuned_model,
                                                   done.fine_tuned_model]]
    summary = run(cmp).summary()
    names = [r["name"] for r in summary["strategies"]]
    assert len(names) == 2 and all(n.startswith("fine_tuned[colours:") for n in names)
    assert summary["advice"]["recommendation"] in names

    # once no record holds the bytes, the recipe cannot be run again: one clear error
    for fid in (again.id, new.training_file):
        Files().delete(fid)
    with pytest.raises(InvalidRequest, match="no longer in the blob store"):
        plan(old.id, "tiny-hash")


def test_template_gaps_name_lines_and_what_is_missing(bases, tmp_path):
    from afinar.models import load_tokenizer

    p = tmp_path / "mixed.jsonl"
    rows = [ROWS[0], {"messages": ROWS[0]["messages"][1:]}, ROWS[1]]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert template_gaps(load_tokenizer(Catalog().get("tiny-drops")), p) == {"system": [1, 3]}
    assert template_gaps(load_tokenizer(Catalog().get("tiny-refuses")), p) == {"system": [1, 3]}
    assert template_gaps(load_tokenizer(Catalog().get("tiny-hash")), p) == {}


def test_rebase_errors_are_one_line(bases, capsys, tmp_path):
    code, _, err = run_cli(capsys, "tune", "rebase", "nope", "--model", "tiny-hash")
    assert code == 2 and err.count("error: ") == 1 and "no fine-tuning job or model 'nope'" in err
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    queued = Jobs().create(model="tiny", training_file=Files().create_from_path(
        p, "fine-tune").id)
    code, _, err = run_cli(capsys, "tune", "rebase", queued.id, "--model", "tiny-hash")
    assert code == 2 and "only a finished (succeeded) job" in err and "Traceback" not in err
