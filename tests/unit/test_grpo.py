"""GRPO (reinforcement fine-tuning): the formulas against hand-computed values on fixed tensors
(group-relative advantages under each ``scale_rewards``, the clipped ratio loss, the k3 KL term,
each ``loss_type``'s aggregation through the trainer's "summed part losses / step units"), then
real jobs on the tiny model: rewards from a grader reach the metrics events in OpenAI's RFT
shape, a job resumed from its checkpoint reproduces the uninterrupted one, the API takes
OpenAI's reinforcement method (a bad grader is a 400 naming the field) and the CLI refuses
``--method grpo`` without ``--grader``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from afinar.tuning.objectives.grpo import (
    aggregate,
    group_advantages,
    kl_k3,
    token_losses,
)

# -- advantages -------------------------------------------------------------------------------
R = torch.tensor([1.0, 0.0, 0.5, 0.5,    # group 1: mean 0.5
                  0.0, 0.0, 0.0, 1.0])   # group 2: mean 0.25


def _std(xs):  # unbiased, as torch (and TRL)
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def test_group_advantages_scale_by_the_group_std():
    g1, g2 = [1.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 1.0]
    want = [(x - 0.5) / (_std(g1) + 1e-4) for x in g1] + \
           [(x - 0.25) / (_std(g2) + 1e-4) for x in g2]
    torch.testing.assert_close(group_advantages(R, 4, "group"), torch.tensor(want))


def test_batch_scaling_uses_the_whole_batch_std_and_none_only_centres():
    s = _std(R.tolist())
    means = [0.5] * 4 + [0.25] * 4
    torch.testing.assert_close(group_advantages(R, 4, "batch"),
                               torch.tensor([(x - m) / (s + 1e-4) for x, m in
                                             zip(R.tolist(), means)]))
    torch.testing.assert_close(group_advantages(R, 4, "none"),
                               torch.tensor([x - m for x, m in zip(R.tolist(), means)]))


def test_unscorable_completions_get_zero_advantage_and_stay_out_of_the_group():
    valid = torch.tensor([True, True, False, True, True, True, True, True])
    adv = group_advantages(R, 4, "group", valid)
    kept = [1.0, 0.0, 0.5]  # the group without its third completion
    m = sum(kept) / 3
    assert adv[2] == 0
    torch.testing.assert_close(adv[[0, 1, 3]], torch.tensor([(x - m) / (_std(kept) + 1e-4)
                                                             for x in kept]))


def test_a_group_with_equal_rewards_has_no_advantage():
    assert torch.equal(group_advantages(torch.ones(4), 4), torch.zeros(4))


# -- the token loss, the KL term, aggregation -----------------------------------------------
def test_clipped_ratio_loss_and_clip_counts_by_hand():
    logp = torch.tensor([-1.0, -1.0, -1.0, -1.0])
    old = torch.tensor([-1.0, -1.5, -0.5, -1.5])  # ratios 1, e^0.5, e^-0.5, e^0.5
    adv = torch.tensor([2.0, 1.0, -1.0, -1.0])
    loss, clipped = token_losses(logp, old, adv, epsilon=0.2, epsilon_high=0.28)
    r = [1.0, math.exp(0.5), math.exp(-0.5), math.exp(0.5)]
    want = []
    for ri, a in zip(r, adv.tolist()):
        want.append(-min(ri * a, min(max(ri, 0.8), 1.28) * a))
    torch.testing.assert_close(loss, torch.tensor(want))
    # ratio 1.65 > 1.28 with A > 0; ratio 0.61 < 0.8 with A < 0; ratio 1.65 with A < 0 is not
    assert clipped.tolist() == [False, True, True, False]


def test_kl_term_is_k3_and_added_with_beta():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    d = [-0.5, 1.0]
    torch.testing.assert_close(kl_k3(logp, ref), torch.tensor([math.exp(x) - x - 1 for x in d]))
    assert kl_k3(logp, logp).abs().max() == 0
    adv = torch.tensor([1.0, -1.0])
    plain, _ = token_losses(logp, logp, adv, 0.2, 0.2)
    with_kl, _ = token_losses(logp, logp, adv, 0.2, 0.2, beta=0.1, ref=ref)
    torch.testing.assert_close(with_kl - plain, 0.1 * kl_k3(logp, ref))


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_each_loss_type_splits_into_parts_as_the_trainer_sums_them(loss_type):
    """Two sequences of 3 and 1 completion tokens, trained in two parts: the trainer's sum of
    the parts' summed losses divided by the sum of their units is the loss_type's formula."""
    tl = torch.tensor([1.0, 2.0, 3.0, 10.0])
    seq = torch.tensor([0, 0, 0, 1])
    lengths = torch.tensor([3.0, 1.0])
    max_len = 8
    want = {"dapo": (1 + 2 + 3 + 10) / 4,  # token sum over the batch's tokens
            "grpo": ((1 + 2 + 3) / 3 + 10 / 1) / 2,  # per-sequence mean, then mean
            "dr_grpo": (1 + 2 + 3 + 10) / (2 * max_len)}[loss_type]
    whole, units = aggregate(tl, seq, lengths, loss_type, max_len)
    assert math.isclose(float(whole) / units, want, rel_tol=1e-6)
    a, ua = aggregate(tl[:3], torch.tensor([0, 0, 0]), lengths[:1], loss_type, max_len)
    b, ub = aggregate(tl[3:], torch.tensor([0]), lengths[1:], loss_type, max_len)
    assert math.isclose(float(a + b) / (ua + ub), want, rel_tol=1e-6)


# -- real jobs on the tiny model ------------------------------------------------------------
from afinar.errors import InvalidRequest  # noqa: E402
from afinar.models import Catalog  # noqa: E402
from afinar.tuning import Jobs  # noqa: E402
from tests.unit.test_tuning import (  # noqa: E402,F401
    prompt_rows,
    run_job,
    tiny_home,
    upload,
)

# the tiny random model writes random tokens: "contains an 'e'" splits its answers both ways
GRADER = {"type": "string_check", "name": "has_e", "input": "{{ sample.output_text }}",
          "reference": "{{ item.letter }}", "operation": "ilike"}
HP = {"n_epochs": 1, "batch_size": 2, "learning_rate_multiplier": 5}
OPTS = {"grader": GRADER, "num_generations": 3, "max_completion_length": 8}


def metrics(job_id):
    return [e for e in Jobs().events(job_id) if e.type == "metrics"]


def test_a_grpo_job_writes_reward_metrics_in_openais_rft_shape(tiny_home, tmp_path):
    train = upload(tmp_path, prompt_rows(12), "t.jsonl")
    val = upload(tmp_path, prompt_rows(3, "other"), "v.jsonl")
    job = Jobs().create(model="tiny", training_file=train, validation_file=val,
                        method={"type": "grpo", "grpo": {**OPTS, "loss_type": "grpo"}},
                        hyperparameters={**HP, "n_epochs": 1, "batch_size": 4, "beta": 0.05},
                        seed=2)
    assert run_job(job) == "succeeded", Jobs().get(job.id).error
    ev = metrics(job.id)
    assert [e.data["step"] for e in ev] == [1, 2, 3]
    for e in ev:
        d = e.data
        assert d["total_steps"] == 3 and 0 <= d["train_mean_reward"] <= 1
        assert d["train_reward_std"] >= 0 and 1 <= d["completion_tokens_mean"] <= 8
        assert 0 <= d["clip_ratio"] <= 1 and d["kl"] >= 0  # beta > 0: the KL is reported
        assert "train_mean_token_accuracy" not in d
        assert e.message.startswith(f"Step {d['step']}/3 , train mean reward=")
    last = ev[-1].data
    assert 0 <= last["full_valid_mean_reward"] <= 1
    assert last["full_valid_loss"] == pytest.approx(-last["full_valid_mean_reward"])
    assert "full validation mean reward=" in ev[-1].message
    done = Jobs().get(job.id)
    manifest = json.loads((Catalog().get(done.fine_tuned_model).path
                           / "afinar-manifest.json").read_text())
    assert manifest["traits"]["objective"] == "grpo" and manifest["traits"]["data_kind"] == "prompt"
    assert manifest["method_config"]["grpo"]["grader"] == GRADER  # stored with the job


def test_without_beta_no_kl_and_rewards_come_from_the_grader(tiny_home, tmp_path):
    """A grader no answer can pass (reference longer than any 2-token answer) gives reward 0,
    zero advantages and a zero loss; no KL field when beta is 0."""
    never = {**GRADER, "reference": "{{ item.letter }}", "operation": "eq"}
    rows = [{**r, "letter": "x" * 50} for r in prompt_rows(10)]
    job = Jobs().create(model="tiny", training_file=upload(tmp_path, rows, "t.jsonl"),
                        method={"type": "grpo", "grpo": {**OPTS, "grader": never,
                                                         "max_completion_length": 2}},
                        hyperparameters={**HP, "batch_size": 5}, seed=1)
    assert run_job(job) == "succeeded", Jobs().get(job.id).error
    for e in metrics(job.id):
        assert e.data["train_mean_reward"] == 0 and e.data["frac_reward_zero_std"] == 1
        assert e.data["train_loss"] == 0 and "kl" not in e.data


def test_a_resumed_grpo_job_reproduces_the_uninterrupted_one(tiny_home, tmp_path, monkeypatch):
    """With num_iterations 2, steps 1-2 train on one batch's rollouts and 3-4 on the next's.
    Paused after step 3 (its state saved with the rollouts step 4 reuses and the number of
    rollouts sampled), resumed: the same rewards, losses and final weights as a run never
    stopped."""
    from tests.unit.test_tuning import _same

    train = upload(tmp_path, prompt_rows(10), "t.jsonl")
    opts = {**OPTS, "num_iterations": 2}

    def job():
        return Jobs().create(model="tiny", training_file=train,
                             method={"type": "grpo", "grpo": opts},
                             hyperparameters={**HP, "batch_size": 5}, seed=5)

    ref = job()
    assert run_job(ref) == "succeeded", Jobs().get(ref.id).error
    paused = job()
    # The pause is asked inside the step-3 metrics event, so the trainer's next control check
    # (before step 4) sees it: a pause from another thread could land after the job's end.
    from afinar.tuning.runner import JobRunner

    emit = JobRunner.event

    def event(self, level, type_, message, data=None):
        emit(self, level, type_, message, data)
        if type_ == "metrics" and data["step"] == 3 and self.job.id == paused.id:
            Jobs().pause(paused.id)

    monkeypatch.setattr(JobRunner, "event", event)
    assert run_job(paused) == "paused"
    assert [e.data["step"] for e in metrics(paused.id)] == [1, 2, 3]
    Jobs().resume(paused.id)
    assert run_job(paused) == "succeeded"

    def curve(j):
        return [(e.data["step"], e.data["train_mean_reward"], round(e.data["train_loss"], 6))
                for e in metrics(j.id)]

    assert [s for s, _, _ in curve(ref)] == [1, 2, 3, 4]  # 2 batches x num_iterations 2
    assert curve(ref) == curve(paused)
    ref_rewards = [r for _, r, _ in curve(ref)]
    assert ref_rewards[0] == ref_rewards[1] and ref_rewards[2] == ref_rewards[3]

    def weights(j):
        from safetensors.torch import load_file

        path = Catalog().get(Jobs().get(j.id).fine_tuned_model).path
        return load_file(str(path / "adapter_model.safetensors"))

    _same(weights(ref), weights(paused))


def test_bad_grpo_data_and_grader_are_refused_before_a_job_exists(tiny_home, tmp_path):
    with pytest.raises(InvalidRequest) as e:
        Jobs().create(model="tiny", training_file=upload(tmp_path, prompt_rows(10), "t.jsonl"),
                      method={"type": "grpo", "grpo": {"grader": {**GRADER,
                                                                  "operation": "equals"}}})
    assert e.value.param.startswith("grader") and "operation" in e.value.param
    with pytest.raises(InvalidRequest, match="needs a grader"):
        Jobs().create(model="tiny", training_file=upload(tmp_path, prompt_rows(10), "t2.jsonl"),
                      method={"type": "grpo"})
    rows = prompt_rows(10)
    rows[3]["messages"].append({"role": "assistant", "content": "an answer"})
    val = upload(tmp_path, rows, "v.jsonl")
    with pytest.raises(InvalidRequest, match="must end with a user message") as e:
        Jobs().create(model="tiny", training_file=upload(tmp_path, prompt_rows(10), "t3.jsonl"),
                      validation_file=val, method={"type": "grpo", "grpo": {"grader": GRADER}})
    assert "line 4" in e.value.message and "messages[1].role" in e.value.message


def test_cli_grpo_needs_a_grader_and_checks_it_before_any_work(tiny_home, tmp_path, capsys,
                                                               monkeypatch):
    from afinar.store.files import Files
    from tests.helpers import run_cli

    train = tmp_path / "t.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in prompt_rows(10)))
    code, _, err = run_cli(capsys, "tune", "create", "-m", "tiny", "--train", str(train),
                           "--method", "grpo", "--detach")
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error:") and "needs a grader" in last, err
    bad = tmp_path / "g.yaml"
    bad.write_text("type: string_check\nname: g\ninput: '{{ sample.output_text }}'\n"
                   "reference: x\noperation: equals\n")
    code, _, err = run_cli(capsys, "tune", "create", "-m", "tiny", "--train", str(train),
                           "--method", "grpo", "--grader", str(bad), "--detach")
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error:") and "g.yaml" in last, err
    assert "Traceback" not in err and not Files().list()  # nothing uploaded
    good = tmp_path / "good.yaml"
    good.write_text(bad.read_text().replace("equals", "ilike"))
    monkeypatch.setattr("afinar.tuning.spawn_worker", lambda *a, **k: None, raising=False)
    code, out, err = run_cli(capsys, "tune", "create", "-m", "tiny", "--train", str(train),
                             "--method", "grpo", "--grader", str(good), "--detach",
                             "-o", "num_generations=2")
    assert code == 0, err
    (job,) = Jobs().list()
    assert job.method == {"type": "grpo", "grpo": {"num_generations": 2, "grader": {
        "type": "string_check", "name": "g", "input": "{{ sample.output_text }}",
        "reference": "x", "operation": "ilike"}}}


def test_http_create_takes_openais_reinforcement_method(tiny_home, tmp_path):
    """``POST /v1/fine_tuning/jobs`` with OpenAI's RFT shape through the openai SDK: the job
    echoes the grader, response_format and the seven hyperparameters (OpenAI's types parse
    it); eval_interval/eval_samples become the job's eval_every_steps/eval_sample_size; a bad
    grader is a 400 naming the field under method.reinforcement; nothing is trained here."""
    import openai
    from fastapi.testclient import TestClient

    from afinar.server.app import create_app

    train = upload(tmp_path, prompt_rows(12), "t.jsonl")
    app = create_app(auth=False)
    app.state.spawn_workers = False
    rf = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {}}}
    with TestClient(app) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http,
                               max_retries=0)
        job = client.fine_tuning.jobs.create(model="tiny", training_file=train, seed=3, method={
            "type": "reinforcement", "reinforcement": {
                "grader": GRADER, "response_format": rf, "hyperparameters": {
                    "n_epochs": 1, "batch_size": 2, "compute_multiplier": 0.5,
                    "eval_interval": 2, "eval_samples": 5, "reasoning_effort": "low"}}})
        assert job.method.type == "reinforcement"
        rft = job.method.reinforcement
        assert rft.grader.type == "string_check" and rft.grader.operation == "ilike"
        assert rft.response_format == rf
        hyper = rft.hyperparameters
        assert (hyper.n_epochs, hyper.batch_size, hyper.compute_multiplier, hyper.eval_interval,
                hyper.eval_samples, hyper.reasoning_effort) == (1, 2, 0.5, 2, 5, "low")
        assert hyper.learning_rate_multiplier == "auto"
        stored = Jobs().get(job.id)
        assert stored.method["type"] == "grpo" and stored.method["grpo"]["grader"] == GRADER
        assert (stored.hyperparameters["eval_every_steps"],
                stored.hyperparameters["eval_sample_size"]) == (2, 5)
        with pytest.raises(openai.BadRequestError) as e:
            client.fine_tuning.jobs.create(model="tiny", training_file=train, method={
                "type": "reinforcement", "reinforcement": {
                    "grader": {**GRADER, "operation": "equals"}}})
        assert e.value.param.startswith("method.reinforcement.grader")
        assert "operation" in e.value.param and e.value.body["type"] == "invalid_request_error"
        r = http.post("/v1/fine_tuning/jobs", json={
            "model": "tiny", "training_file": train, "method": {"type": "reinforcement"}})
        err = r.json()["error"]
        assert r.status_code == 400 and "needs a grader" in err["message"]
        assert err["param"] == "method.reinforcement.grader"
