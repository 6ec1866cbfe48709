"""Fine-tuning on the tiny model: every method trains for real and changes outputs; jobs resume
exactly after SIGKILL; pause/resume/cancel; early stopping promotes the best checkpoint; data the
validator rejects never reaches running."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from afinar.errors import InvalidRequest
from afinar.models import Catalog, load_causal_lm
from afinar.store.files import Files
from afinar.tuning import METHODS, Hyperparameters, Jobs, resolve
from afinar.tuning.runner import JobRunner
from afinar.tuning.worker import WorkerLock, recover_orphans, run_worker

ANSWER = "Red, blue and yellow."


def chat_rows(n, answer=ANSWER, prefix="question"):
    return [{"messages": [{"role": "user", "content": f"{prefix} {i}"},
                          {"role": "assistant", "content": answer}]} for i in range(n)]


def pref_rows(n):
    return [{"input": {"messages": [{"role": "user", "content": f"question {i}"}]},
             "preferred_output": [{"role": "assistant", "content": ANSWER}],
             "non_preferred_output": [{"role": "assistant", "content": f"quick fox {i}"}]}
            for i in range(n)]


def unpaired_rows(n):
    """KTO rows as ``afinar feedback export --as kto`` writes them."""
    return [{"messages": [{"role": "user", "content": f"question {i}"}],
             "completion": ANSWER if i % 2 else f"quick fox {i}", "label": bool(i % 2)}
            for i in range(n)]


def text_rows(n):
    return [{"text": f"Debian is a free operating system. Packages are installed with apt. {i}"}
            for i in range(n)]


def upload(tmp_path, rows, name):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Files().create_from_path(p, "fine-tune").id


@pytest.fixture
def tiny_home(home, tiny_model_template):
    Catalog().add("tiny", tiny_model_template)
    return home


def run_job(job) -> str:
    return JobRunner(Jobs().get(job.id), __import__("afinar.settings").settings.get_settings(),
                     "test").run()


def logits_of(model_id: str) -> torch.Tensor:
    lm = load_causal_lm(Catalog().get(model_id))
    ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": "question 1"}],
                                           add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)["input_ids"]
    with torch.no_grad():
        return lm.model(input_ids=ids).logits[0, -1]


def prompt_rows(n, prefix="question"):
    """Reinforcement fine-tuning rows: a prompt, and the keys the grader reads (its item)."""
    return [{"messages": [{"role": "user", "content": f"{prefix} {i}"}], "letter": "e"}
            for i in range(n)]


DATA = {"unpaired": unpaired_rows,
        "sft": chat_rows, "preference": pref_rows, "text": text_rows, "prompt": prompt_rows}
# the options a method cannot train without (GRPO's grader: "contains an 'e'", which splits the
# tiny random model's answers both ways), and small rollouts
OPTIONS = {"grpo": {"grader": {"type": "string_check", "name": "has_e", "operation": "ilike",
                               "input": "{{ sample.output_text }}",
                               "reference": "{{ item.letter }}"},
                    "num_generations": 2, "max_completion_length": 8}}


# a reinforcement objective's loss is not meant to fall (its rewards are: test_grpo.py)
@pytest.mark.parametrize("method", [m for m in METHODS if m != "qlora"
                                    and METHODS.get(m).data_kind != "prompt"])
def test_every_method_trains_and_changes_the_model(tiny_home, tmp_path, method):
    kind = METHODS.get(method).data_kind
    train = upload(tmp_path, DATA[kind](24), "train.jsonl")
    job = Jobs().create(model="tiny", training_file=train, method={"type": method},
                        hyperparameters={"n_epochs": 2, "batch_size": 8,
                                         "learning_rate_multiplier": 20}, seed=3)
    assert run_job(job) == "succeeded", Jobs().get(job.id).error
    done = Jobs().get(job.id)
    assert done.fine_tuned_model == f"ft:tiny:afinar::{job.id[-8:]}"
    assert done.trained_tokens > 0 and done.result_files
    before, after = logits_of("tiny"), logits_of(done.fine_tuned_model)
    assert not torch.allclose(before, after, atol=1e-4), "training did not change the model"
    hist = [e.data for e in Jobs().events(job.id) if e.type == "metrics"]
    assert len(hist) == 6 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    manifest = json.loads((Catalog().get(done.fine_tuned_model).path
                           / "afinar-manifest.json").read_text())
    assert manifest["method"] == method and manifest["seed"] == 3
    assert manifest["template_fingerprint"]["stop_tokens"] == ["<|im_end|>"]


def test_lora_output_loads_with_plain_peft(tiny_home, tmp_path, tiny_model_template):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = Jobs().create(model="tiny", training_file=upload(tmp_path, chat_rows(16), "t.jsonl"),
                        hyperparameters={"n_epochs": 1}, seed=1)
    assert run_job(job) == "succeeded"
    path = Catalog().get(Jobs().get(job.id).fine_tuned_model).path
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_template),
                                      str(path))
    assert model.peft_config["default"].r == 16


def test_qlora_on_cpu_is_a_clear_error(tiny_home, tmp_path):
    job = Jobs().create(model="tiny", training_file=upload(tmp_path, chat_rows(16), "t.jsonl"),
                        method={"type": "qlora"})
    assert run_job(job) == "failed"
    err = Jobs().get(job.id).error
    assert "CUDA" in err["message"] and err["param"] == "method"


@pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL
def test_rejected_data_never_reaches_running(tiny_home, tmp_path):
    rows = chat_rows(12) + [{"messages": [{"role": "user", "content": "no answer"}]}]
    job = Jobs().create(model="tiny", training_file=upload(tmp_path, rows, "bad.jsonl"))
    assert run_job(job) == "failed"
    j = Jobs().get(job.id)
    assert j.error["code"] == "invalid_training_file" and j.error["param"] == "training_file"
    assert "bad.jsonl" in j.error["message"] and "line 13" in j.error["message"]
    assert not any("started" in e.message for e in Jobs().events(job.id))
    pref = upload(tmp_path, pref_rows(12), "pref.jsonl")
    with pytest.raises(InvalidRequest, match="preference"):  # refused before a job exists
        Jobs().create(model="tiny", training_file=pref, method={"type": "lora"})
    assert len(Jobs().list()) == 1


@pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL
def test_bad_job_options_fail_fast(tiny_home, tmp_path):
    train = upload(tmp_path, chat_rows(12), "t.jsonl")
    for kw in (dict(method={"type": "magic"}), dict(hyperparameters={"n_epochs": 0}),
               dict(method={"type": "lora", "lora": {"rank": 4}}), dict(suffix="bad suffix!")):
        with pytest.raises(InvalidRequest):
            Jobs().create(model="tiny", training_file=train, **kw)


def test_auto_hyperparameters():  # the rules' table: tests/unit/test_small_data.py
    r = resolve(Hyperparameters(), 20, 2e-4, 8192)
    assert (r.n_epochs, r.batch_size, r.learning_rate_multiplier) == (5, 1, 1.0)
    assert r.max_seq_len == 2048 and r.steps_per_epoch == 20 and r.total_steps == 100
    r = resolve(Hyperparameters(), 30000, 2e-4, 256)
    assert (r.n_epochs, r.batch_size, r.learning_rate_multiplier) == (1, 64, 2.0)
    assert r.learning_rate == pytest.approx(4e-4) and r.max_seq_len == 256
    r = resolve(Hyperparameters(n_epochs=2, batch_size=4, learning_rate_multiplier=0.5,
                                gradient_accumulation_steps=2), 20, 2e-4, 256)
    assert (r.n_epochs, r.batch_size, r.learning_rate, r.steps_per_epoch) == (2, 4, 1e-4, 3)


def when_step(job_id: str, step: int, action) -> threading.Thread:
    """Run ``action(job_id)`` in a thread as soon as the job reports ``step``."""

    def wait() -> None:
        while not any(e.type == "metrics" and e.data["step"] >= step
                      for e in Jobs().events(job_id)):
            time.sleep(0.01)
        action(job_id)

    t = threading.Thread(target=wait)
    t.start()
    return t


def _weights(model_id):
    from safetensors.torch import load_file

    path = Catalog().get(model_id).path
    return load_file(str(path / "adapter_model.safetensors"))


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


HP = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 20,
      "checkpoint_every_steps": 7}


@pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL
def test_pause_and_resume_give_the_same_result(tiny_home, tmp_path):
    train = upload(tmp_path, chat_rows(80), "t.jsonl")
    ref = Jobs().create(model="tiny", training_file=train, hyperparameters=HP, seed=5)
    assert run_job(ref) == "succeeded"
    job = Jobs().create(model="tiny", training_file=train, hyperparameters=HP, seed=5)
    t = when_step(job.id, 9, Jobs().pause)
    assert run_job(job) == "paused"
    t.join()
    assert Jobs().get(job.id).status == "paused"
    Jobs().resume(job.id)
    assert run_job(job) == "succeeded"
    _same(_weights(Jobs().get(ref.id).fine_tuned_model),
          _weights(Jobs().get(job.id).fine_tuned_model))


@pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL
def test_cancel(tiny_home, tmp_path):
    train = upload(tmp_path, chat_rows(80), "t.jsonl")
    job = Jobs().create(model="tiny", training_file=train, hyperparameters=HP)
    t = when_step(job.id, 1, Jobs().cancel)
    assert run_job(job) == "cancelled"
    t.join()
    j = Jobs().get(job.id)
    assert j.status == "cancelled" and j.fine_tuned_model is None
    queued = Jobs().create(model="tiny", training_file=train)
    assert Jobs().cancel(queued.id).status == "cancelled"


def test_sigkill_mid_training_resumes_to_the_same_result(tiny_home, tmp_path):
    train = upload(tmp_path, chat_rows(160), "t.jsonl")
    ref = Jobs().create(model="tiny", training_file=train, hyperparameters=HP, seed=9)
    assert run_job(ref) == "succeeded"
    job = Jobs().create(model="tiny", training_file=train, hyperparameters=HP, seed=9)
    env = {**os.environ, "AFINAR_HOME": str(tiny_home)}
    proc = subprocess.Popen([sys.executable, "-m", "afinar", "worker", "--exit-when-idle"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        steps = [e.data["step"] for e in Jobs().events(job.id) if e.type == "metrics"]
        if steps and steps[-1] >= 16:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # power loss: no chance to clean up
    proc.wait()
    assert Jobs().get(job.id).status == "running"  # orphaned...
    assert not WorkerLock(tiny_home).held_elsewhere()  # ...and provably without a worker
    assert run_worker(exit_when_idle=True, log=lambda m: None) == 1  # a new worker takes it up
    done = Jobs().get(job.id)
    assert done.status == "succeeded"
    msgs = [e.message for e in Jobs().events(job.id)]
    assert any("resumes from its last checkpoint" in m for m in msgs)
    assert any(m.startswith("Resumed from step 14") for m in msgs)
    _same(_weights(Jobs().get(ref.id).fine_tuned_model), _weights(done.fine_tuned_model))


def test_early_stopping_promotes_the_best_checkpoint(tiny_home, tmp_path):
    train = upload(tmp_path, chat_rows(24), "t.jsonl")
    val = upload(tmp_path, chat_rows(12, answer="The quick brown fox.", prefix="other"), "v.jsonl")
    job = Jobs().create(model="tiny", training_file=train, validation_file=val, seed=2,
                        hyperparameters={"n_epochs": 6, "batch_size": 8,
                                         "learning_rate_multiplier": 100,
                                         "early_stopping_patience": 1, "eval_every_steps": 1})
    assert run_job(job) == "succeeded"
    rows = [e.data for e in Jobs().events(job.id) if e.type == "metrics"]
    full = [(r["step"], r["full_valid_loss"]) for r in rows if "full_valid_loss" in r]
    assert all("valid_loss" in r for r in rows)  # sampled validation every step
    best_step = min(full, key=lambda x: x[1])[0]
    assert len(full) < 6  # stopped early
    assert any("Early stopping" in e.message for e in Jobs().events(job.id))
    j = Jobs().get(job.id)
    manifest = json.loads((Catalog().get(j.fine_tuned_model).path
                           / "afinar-manifest.json").read_text())
    assert manifest["best"]["step"] == best_step
    assert manifest["chosen"]["checkpoint"].endswith(f":ckpt-step-{best_step}")
    _same(_weights(j.fine_tuned_model), _weights(manifest["chosen"]["checkpoint"]))
    ckpts = Jobs().checkpoints(job.id)
    assert len(ckpts) <= 4 and all(Catalog().get(c.model_id) for c in ckpts)


@pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL
def test_orphan_recovery_requeues_running_jobs(tiny_home, tmp_path):
    job = Jobs().create(model="tiny", training_file=upload(tmp_path, chat_rows(12), "t.jsonl"))
    Jobs().update(job.id, status="running", worker="dead:1")
    assert recover_orphans(Jobs()) == [job.id]
    assert Jobs().get(job.id).status == "queued"


@pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL
def test_cli_create_follows_to_success(tiny_home, tmp_path, capsys):
    from afinar.cli import main

    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(16)))
    cfg = tmp_path / "job.yaml"
    cfg.write_text(f"model: tiny\ntrain: {p}\nepochs: 1\nseed: 4\noptions:\n  r: 4\n")
    with pytest.raises(SystemExit) as e:
        main(["tune", "create", "-c", str(cfg), "--suffix", "demo"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "succeeded: ft:tiny:afinar:demo:" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(p.read_text() + '{"messages": []}\n')
    with pytest.raises(SystemExit) as e:
        main(["tune", "create", "-m", "tiny", "--train", str(bad)])
    assert e.value.code == 2
    assert "missing_messages_list" in capsys.readouterr().err
    assert len(Jobs().list()) == 1  # the rejected file never became a job


def test_export_merged_matches_the_adapter(tiny_home, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from afinar.cli import main

    job = Jobs().create(model="tiny", training_file=upload(tmp_path, chat_rows(16), "t.jsonl"),
                        hyperparameters={"n_epochs": 1, "learning_rate_multiplier": 20}, seed=1)
    assert run_job(job) == "succeeded"
    ft = Jobs().get(job.id).fine_tuned_model
    out = tmp_path / "merged"
    with pytest.raises(SystemExit) as e:
        main(["models", "export", ft, "--out", str(out)])
    assert e.value.code == 0
    assert {"model.safetensors", "tokenizer.json", "afinar-manifest.json"} <= {
        p.name for p in out.iterdir()}
    plain = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 5, 9, 20]])
    with torch.no_grad():
        want = load_causal_lm(Catalog().get(ft)).model(input_ids=ids).logits
        got = plain(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(SystemExit) as e:
        main(["models", "export", "tiny", "--out", str(tmp_path / "x")])
    assert e.value.code == 2


def test_fine_tuned_model_is_usable_in_chat_and_checks_its_template(tiny_home, tmp_path):
    from afinar.models import Generator, SamplingParams
    from afinar.models.finetuned import TemplateMismatch

    job = Jobs().create(model="tiny", training_file=upload(tmp_path, chat_rows(16), "t.jsonl"),
                        hyperparameters={"n_epochs": 1}, seed=1)
    assert run_job(job) == "succeeded"
    ft = Jobs().get(job.id).fine_tuned_model
    ckpt = Jobs().checkpoints(job.id)[0].model_id
    for mid in (ft, ckpt):
        r = Generator(load_causal_lm(Catalog().get(mid))).chat(
            [{"role": "user", "content": "hello"}], SamplingParams(max_tokens=3, seed=0))
        assert r.completion_tokens <= 3
    manifest = Catalog().get(ft).path / "afinar-manifest.json"
    data = json.loads(manifest.read_text())
    data["template_fingerprint"]["template_sha256"] = "0" * 64
    manifest.write_text(json.dumps(data))
    with pytest.raises(TemplateMismatch, match="another chat template"):
        load_causal_lm(Catalog().get(ft))


def test_splitting_long_batches_gives_the_same_update(tiny_home, tmp_path):
    """A batch run as several forward passes (token budget) trains to the same weights."""
    train = upload(tmp_path, chat_rows(24), "t.jsonl")
    out = []
    for budget in (4096, 64):
        job = Jobs().create(model="tiny", training_file=train, seed=3, hyperparameters={
            "n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 20,
            "max_tokens_per_forward": budget},
            method={"type": "lora", "lora": {"dropout": 0.0}})  # dropout draws differ per pass
        assert run_job(job) == "succeeded"
        out.append(_weights(Jobs().get(job.id).fine_tuned_model))
    for k in out[0]:
        torch.testing.assert_close(out[0][k], out[1][k], rtol=1e-4, atol=1e-5)
