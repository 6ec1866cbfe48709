"""The preference objectives (issue #16, item 4): DPO's loss types, KTO, ORPO and SimPO.

Each loss is computed on fixed log-probabilities and compared with the formula of TRL's
definitions (FIELD-NOTES-2 §5) worked out by hand here with ``math`` (and, where TRL's own loss
functions can be called on their own and TRL is installed, with those). Then every preference
objective, table-driven, trains a few steps of a real job on the tiny model: its validation
loss falls, its metrics events are written, and a job paused mid-way resumes to the same weights
and losses as one that ran through. The table must name every registered objective. Plus the
data (KTO's unpaired rows, exactly what ``afinar feedback export --as kto`` writes), the
hyperparameters' checks, the API's method shapes and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from afinar.data.validate import validate_file
from afinar.errors import InvalidRequest
from afinar.models import Catalog
from afinar.tuning import METHODS, OBJECTIVES, Jobs
from afinar.tuning.hparams import DPO_LOSS_TYPES, parse_hyperparameters
from afinar.tuning.methods import get_method, method_for_type
from afinar.tuning.objectives.dpo import LOSSES, dpo_losses
from afinar.tuning.objectives.kto import kto_losses, mismatched
from afinar.tuning.objectives.orpo import orpo_loss
from afinar.tuning.objectives.pairs import PairLogps
from afinar.tuning.objectives.simpo import simpo_loss
from afinar.tuning.serialize import job_object
from tests.unit.test_tuning import (  # noqa: F401
    ANSWER,
    pref_rows,
    run_job,
    tiny_home,
    unpaired_rows,
    upload,
    when_step,
)

# fixed log-probabilities of three pairs: policy and reference, summed over the answers' tokens
C = [-4.0, -7.5, -2.25]  # chosen, policy
R = [-6.0, -7.0, -9.0]  # rejected, policy
RC = [-5.0, -7.0, -3.0]  # chosen, reference
RR = [-5.5, -8.0, -8.0]  # rejected, reference
NC = [4.0, 5.0, 3.0]  # trained tokens of each chosen answer
NR = [6.0, 7.0, 9.0]


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def mean(xs) -> float:
    return sum(xs) / len(xs)


def hand_dpo(kind: str, beta: float, eps: float) -> list[float]:
    """Each pair's loss by TRL's definition, in plain floats."""
    out = []
    for c, r, rc, rr, nc, nr in zip(C, R, RC, RR, NC, NR):
        d = (c - rc) - (r - rr)
        da = (c - rc) / nc - (r - rr) / nr
        out.append({
            "sigmoid": -logsig(beta * d),
            "hinge": max(0.0, 1 - beta * d),
            "ipo": (da - 1 / (2 * beta)) ** 2,
            "robust": (-(1 - eps) * logsig(beta * d) + eps * logsig(-beta * d)) / (1 - 2 * eps),
            "sigmoid_norm": -logsig(beta * da),
        }[kind])
    return out


@pytest.mark.parametrize("kind", DPO_LOSS_TYPES)
@pytest.mark.parametrize("beta,eps", [(0.1, 0.0), (0.5, 0.2)])
def test_dpo_loss_types_match_the_formulas(kind, beta, eps):
    losses, margin = dpo_losses(kind, beta, eps, t(C), t(R), t(RC), t(RR), t(NC), t(NR))
    assert losses.tolist() == pytest.approx(hand_dpo(kind, beta, eps), rel=1e-5, abs=1e-6)
    # the sign of the margin says which pairs are ranked right: 1 and 3 here, not 2
    assert (margin > 0).tolist() == [True, False, True]


def test_dpo_loss_types_are_the_hyperparameters_choices():
    assert tuple(LOSSES) == DPO_LOSS_TYPES
    assert len({tuple(hand_dpo(k, 0.5, 0.2)) for k in DPO_LOSS_TYPES}) == len(DPO_LOSS_TYPES)


def test_the_default_sigmoid_is_bitwise_the_loss_dpo_had():
    g = torch.Generator().manual_seed(0)
    c, r, rc, rr = (torch.randn(64, generator=g) * 20 for _ in range(4))
    before = -F.logsigmoid(0.1 * ((c - rc) - (r - rr))).mean()  # the expression dpo.py had
    losses, _ = dpo_losses("sigmoid", 0.1, 0.0, c, r, rc, rr)
    assert torch.equal(losses.mean(), before)


def pair(c=C, r=R, nc=NC, nr=NR) -> PairLogps:
    return PairLogps(t(c), t(r), t(nc), t(nr))


def test_orpo_matches_the_formula():
    beta = 0.1
    loss, ratio = orpo_loss(pair(), beta)
    nll = -sum(C) / sum(NC)
    terms = []
    for c, r, nc, nr in zip(C, R, NC, NR):
        pc, pr = c / nc, r / nr  # log of the average token probability
        odds = (pc - math.log1p(-math.exp(pc))) - (pr - math.log1p(-math.exp(pr)))
        terms.append(logsig(odds))
    assert ratio.tolist() == pytest.approx(terms, rel=1e-5)
    assert float(loss) == pytest.approx(nll - beta * mean(terms), rel=1e-5)
    # near probability 1 the stable log(1 - p) stays finite where the naive one is -inf
    near = orpo_loss(pair([-1e-8, -3.0], [-2.0, -1e-9], [1.0, 1.0], [1.0, 1.0]), beta)[0]
    assert math.isfinite(float(near))


@pytest.mark.parametrize("beta,gamma,alpha", [(2.0, 0.5, 0.0), (2.5, 1.0, 0.3)])
def test_simpo_matches_the_formula(beta, gamma, alpha):
    loss, losses = simpo_loss(pair(), beta, gamma, alpha)
    hand = [-logsig(beta * (c / nc - r / nr) - gamma) for c, r, nc, nr in zip(C, R, NC, NR)]
    assert losses.tolist() == pytest.approx(hand, rel=1e-5)
    nll = -sum(C) / sum(NC)
    assert float(loss) == pytest.approx(mean(hand) + alpha * nll, rel=1e-5)


def hand_kto(lp, ref, kl_lp, kl_ref, labels, beta, dw, uw):
    z = max(0.0, mean([a - b for a, b in zip(kl_lp, kl_ref)])) if kl_lp else 0.0
    out = []
    for a, b, good in zip(lp, ref, labels):
        ratio = a - b
        s = 1 / (1 + math.exp(-beta * ((ratio - z) if good else (z - ratio))))
        out.append((dw if good else uw) * (1 - s))
    return out, z


@pytest.mark.parametrize("kl_shift,dw,uw", [(0.0, 1.0, 1.0), (3.0, 1.0, 1.33), (-50.0, 2.0, 0.5)])
def test_kto_matches_the_formula(kl_shift, dw, uw):
    lp, ref = [-4.0, -6.0, -3.0, -9.0], [-5.0, -5.0, -4.0, -7.0]
    kl_lp = [-8.0, -10.0, -7.0, -6.0]
    kl_ref = [x - kl_shift for x in [-9.0, -9.5, -7.5, -6.0]]
    labels = [True, False, True, False]
    losses, z, ratio = kto_losses(t(lp), t(ref), t(kl_lp), t(kl_ref), torch.tensor(labels),
                                  0.1, dw, uw)
    hand, hz = hand_kto(lp, ref, kl_lp, kl_ref, labels, 0.1, dw, uw)
    assert float(z) == pytest.approx(hz, abs=1e-6) and float(z) >= 0  # clamped at 0
    assert losses.tolist() == pytest.approx(hand, rel=1e-5)
    assert ratio.tolist() == [1.0, -1.0, 1.0, -2.0]
    empty = torch.zeros(0)
    _, z0, _ = kto_losses(t(lp), t(ref), empty, empty, torch.tensor(labels), 0.1)
    assert float(z0) == 0.0  # a batch of one row has no mismatched pair


def test_kto_kl_estimate_is_detached():
    lp = t([-4.0, -6.0]).requires_grad_()
    kl = t([-8.0, -3.0]).requires_grad_()
    losses, z, _ = kto_losses(lp, t([-5.0, -5.0]), kl, t([-9.0, -9.0]),
                              torch.tensor([True, False]), 0.1)
    losses.mean().backward()
    assert kl.grad is None and lp.grad is not None and not z.requires_grad


def test_a_mismatched_pair_is_one_prompt_with_another_answer():
    from afinar.data.encode import Encoded

    a = Encoded([1, 2, 3, 10, 11], [False, False, False, True, True])
    b = Encoded([4, 5, 20, 21, 22], [False, False, True, True, False])
    m = mismatched(a, b, 100)
    assert m.input_ids == [1, 2, 3, 20, 21, 22] and m.trained == [False] * 3 + [True, True, False]
    assert mismatched(a, b, 4).input_ids == [1, 2, 3, 20]


def test_every_dpo_loss_type_trains_the_tiny_model(tiny_model_template, tmp_path):
    """Each loss type through the objective on the tiny model: at the first step the policy is
    the reference (a fresh LoRA adds zero), so the loss is the formula at margin 0; a few
    optimizer steps on the same pairs lower it."""
    from types import SimpleNamespace

    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from afinar.tuning.methods.lora import LoraOptions, lora_config
    from afinar.tuning.objectives import ObjectiveContext
    from afinar.tuning.objectives.dpo import Dpo
    from afinar.tuning.samples import load_samples

    tok = AutoTokenizer.from_pretrained(tiny_model_template)
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in pref_rows(12)))
    samples, _ = load_samples(p, tok, "preference", 256)
    items = [(("t", i), s) for i, s in enumerate(samples[:4])]
    beta, eps = 0.2, 0.1
    at_zero = {"sigmoid": math.log(2), "hinge": 1.0, "ipo": 1 / (4 * beta ** 2),
               "robust": math.log(2), "sigmoid_norm": math.log(2)}
    assert set(at_zero) == set(DPO_LOSS_TYPES)
    for kind in DPO_LOSS_TYPES:
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_template),
                               lora_config(LoraOptions(dropout=0.0)))
        hp = SimpleNamespace(beta=beta, loss_type=kind, label_smoothing=eps)
        obj = Dpo(ObjectiveContext(hp, tok.pad_token_id, "cpu"))
        part = obj.parts([items])[0]
        assert sum(obj.precompute(model, [part], [])) == 4
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=3e-3)
        values = []
        for _ in range(4):
            out = obj.loss(model, part)
            (out.loss / part.units).backward()
            opt.step()
            opt.zero_grad()
            values.append(out.value / part.units)
        assert values[0] == pytest.approx(at_zero[kind], rel=1e-5), kind
        assert values[-1] < values[0], (kind, values)


# -- TRL's own functions, where they can be called on their own -----------------------------


def _trl(module: str):
    pytest.importorskip("trl")
    try:
        return __import__(module, fromlist=["x"])
    except ImportError as e:  # trl without its extras (datasets, accelerate)
        pytest.skip(f"{module} does not import: {e}")


def test_orpo_odds_ratio_term_matches_trl():
    from types import SimpleNamespace

    orpo = _trl("trl.experimental.orpo.orpo_trainer")
    avg_c, avg_r = t(C) / t(NC), t(R) / t(NR)
    me = SimpleNamespace(beta=0.1, accelerator=SimpleNamespace(device="cpu"))
    losses, *_ = orpo.ORPOTrainer.odds_ratio_loss(me, avg_c, avg_r)
    loss, _ = orpo_loss(pair(), 0.1)
    nll = -sum(C) / sum(NC)
    torch.testing.assert_close(loss, nll - losses.mean())


def test_simpo_matches_trl_cpo():
    from types import SimpleNamespace

    cpo = _trl("trl.experimental.cpo.cpo_trainer")
    avg_c, avg_r = t(C) / t(NC), t(R) / t(NR)
    me = SimpleNamespace(beta=2.5, simpo_gamma=1.0, loss_type="simpo", label_smoothing=0.0,
                         alpha=0.0, accelerator=SimpleNamespace(device="cpu"))
    losses, *_ = cpo.CPOTrainer.cpo_loss(me, avg_c, avg_r)
    _, mine = simpo_loss(pair(), 2.5, 1.0)
    torch.testing.assert_close(mine, losses)


# -- every preference objective trains, writes its metrics and resumes ----------------------


ROWS = {"preference": pref_rows, "unpaired": unpaired_rows}
# objective -> the method and hyperparameters of its case (a job that trains and resumes)
CASES = {
    "dpo": ("dpo", {"loss_type": "ipo", "beta": 0.2}),
    "kto": ("kto", {"desirable_weight": 1.2, "undesirable_weight": 1.0}),
    "orpo": ("orpo", {"beta": 0.2}),
    "simpo": ("simpo", {"beta": 2.5, "gamma": 0.5, "cpo_alpha": 0.5}),
}
# objectives that are not preference objectives, and where they are tested
ELSEWHERE = {"sft": "test_tuning.py, test_methods.py", "grpo": "test_grpo.py"}


def test_every_registered_objective_has_a_case():
    missing = set(OBJECTIVES.names()) - set(CASES) - set(ELSEWHERE)
    assert not missing, f"objectives without a case in CASES: {sorted(missing)}"
    for objective, (method, _) in CASES.items():
        assert METHODS.get(method).objective == objective


def _job(tmp_path, method, hp, seed=3):
    kind = METHODS.get(method).data_kind
    rows = ROWS[kind](12)
    train = upload(tmp_path, rows, f"{kind}-t.jsonl")
    val = upload(tmp_path, rows[:8], f"{kind}-v.jsonl")  # training rows: the loss must fall
    return Jobs().create(model="tiny", training_file=train, validation_file=val, seed=seed,
                         method={"type": method, method: {"dropout": 0.0}}, hyperparameters={
                             "n_epochs": 2, "batch_size": 6, "learning_rate_multiplier": 20,
                             "eval_every_steps": 1, "eval_sample_size": 8, **hp})


def _metrics(job):
    return [e.data for e in Jobs().events(job.id) if e.type == "metrics"]


def _weights(job):
    from safetensors.torch import load_file

    path = Catalog().get(Jobs().get(job.id).fine_tuned_model).path
    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.parametrize("objective", CASES)
def test_every_preference_objective_trains_and_resumes(tiny_home, tmp_path, objective):
    from tests.unit.test_tuning import _same

    method, hp = CASES[objective]
    ref = _job(tmp_path, method, hp)
    assert run_job(ref) == "succeeded", Jobs().get(ref.id).error
    rows = _metrics(ref)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # the first step's policy is the reference (a fresh LoRA adds zero): DPO's IPO loss is
    # (0 - 1/(2 beta))^2 and KTO's z is 0, each row's loss its weight times 1 - s(0)
    first = rows[0]["train_loss"]
    if objective == "dpo":
        assert first == pytest.approx(1 / (4 * 0.2 ** 2), rel=1e-5)
    if objective == "kto":  # k desirable rows of the 6 in the first batch
        assert any(first == pytest.approx(0.5 * (1.2 * k + 1.0 * (6 - k)) / 6, rel=1e-5)
                   for k in range(7)), first
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["valid_loss"]) for r in rows)
    assert rows[-1]["valid_loss"] < rows[0]["valid_loss"], rows
    assert "full_valid_loss" in rows[1] and "full_valid_loss" in rows[3]
    done = Jobs().get(ref.id)
    obj = job_object(done)["method"]
    kind = OBJECTIVES.get(METHODS.get(method).objective).openai_type
    assert obj["type"] == kind and obj["afinar"]["method"] == method
    echoed = obj[kind]["hyperparameters"]
    for k, v in hp.items():
        assert echoed[k] == (v if v != "auto" else
                             OBJECTIVES.get(METHODS.get(method).objective).hyperparameters[k])
    manifest = json.loads((Catalog().get(done.fine_tuned_model).path
                           / "afinar-manifest.json").read_text())
    assert manifest["traits"] == get_method(method).traits()
    assert manifest["traits"]["artifact"] == "adapter" and manifest["traits"]["shares_base"]

    paused = _job(tmp_path, method, hp)
    th = when_step(paused.id, 2, Jobs().pause)
    assert run_job(paused) == "paused"
    th.join()
    Jobs().resume(paused.id)
    assert run_job(paused) == "succeeded"
    _same(_weights(ref), _weights(paused))
    assert [(r["step"], r["valid_loss"]) for r in _metrics(paused)] == \
        [(r["step"], r["valid_loss"]) for r in rows]
    computed = [e.message for e in Jobs().events(paused.id) if "reference log-prob" in e.message]
    if method in ("dpo", "kto"):  # once, before the first step; never again on resume
        assert len(computed) == 1
    else:  # reference-free
        assert computed == []


def test_kto_trains_on_single_row_batches_without_the_kl_term(tiny_home, tmp_path):
    job = _job(tmp_path, "kto", {"batch_size": 1, "n_epochs": 1})
    assert run_job(job) == "succeeded", Jobs().get(job.id).error
    assert len(_metrics(job)) == 12


# -- data -------------------------------------------------------------------------------------


def test_the_feedback_export_is_what_kto_trains_on(home, tmp_path, tiny_model_template):
    """``afinar feedback export --as kto``'s own file: validated as unpaired rows, encoded with
    the model's template with only the answer trained, labels kept."""
    from transformers import AutoTokenizer

    from afinar.data.feedback import export
    from afinar.store.feedback import Feedback
    from afinar.tuning.samples import load_samples
    from tests.unit.test_feedback import WHO, _log

    store = Feedback()
    for i in range(12):
        one = _log(store, i, [f"Item {i} is red.", f"Item {i} is blue."])
        store.add(WHO, one.id, "rating", rating=1 if i % 3 else -1, choice_index=i % 2)
    out = tmp_path / "kto.jsonl"
    export("kto", store.items(WHO), out)
    tok = AutoTokenizer.from_pretrained(tiny_model_template)
    report = validate_file(out, tok)
    assert report.ok and report.format == "unpaired", report.errors
    assert report.stats["labels"] == {"true": 8, "false": 4}
    samples, _ = load_samples(out, tok, "unpaired", 512)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [s.label for s in samples] == [r["label"] for r in rows]
    for s, r in zip(samples, rows):
        trained = tok.decode([i for i, m in zip(s.seq.input_ids, s.seq.trained) if m])
        assert trained.startswith(r["completion"]) and "Question" not in trained
    with pytest.raises(InvalidRequest, match="unpaired"):
        load_samples(out, tok, "preference", 512)


def test_bad_unpaired_rows_name_their_line_and_field(tmp_path):
    rows = unpaired_rows(12)
    rows[2] = {k: v for k, v in rows[2].items() if k != "label"}
    rows[4]["label"] = "yes"
    rows[6]["label"] = 1
    rows[8]["completion"] = ""
    rows[9] = {"messages": rows[9]["messages"], "label": True}  # the answer went missing
    p = tmp_path / "bad.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = validate_file(p)
    assert report.format == "unpaired" and not report.ok
    got = {(e.line, e.field) for e in report.errors if e.code != "too_few_examples"}
    assert got == {(3, "label"), (5, "label"), (7, "label"), (9, "completion"),
                   (10, "completion")}, report.errors
    assert "true or false" in next(e.message for e in report.errors if e.line == 5)


def test_a_chat_file_is_still_chat(tmp_path):
    p = tmp_path / "chat.jsonl"
    p.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q {i}"}, {
        "role": "assistant", "content": "a"}], "label": "x"}) + "\n" for i in range(10)))
    assert validate_file(p).format == "chat"


def test_kto_refuses_pairs_and_dpo_refuses_unpaired_rows_before_a_job(tiny_home, tmp_path):
    pairs = upload(tmp_path, pref_rows(12), "p.jsonl")
    single = upload(tmp_path, unpaired_rows(12), "u.jsonl")
    with pytest.raises(InvalidRequest, match="method kto expects unpaired rows") as e:
        Jobs().create(model="tiny", training_file=pairs, method={"type": "kto"})
    assert e.value.param == "training_file"
    with pytest.raises(InvalidRequest, match="an unpaired \\(KTO\\) row"):
        Jobs().create(model="tiny", training_file=single, method={"type": "orpo"})


# -- hyperparameters, the API's shapes, the CLI -------------------------------------------------


@pytest.mark.parametrize("hp,param", [
    ({"loss_type": "bogus"}, "hyperparameters.loss_type"),
    ({"loss_type": 3}, "hyperparameters.loss_type"),
    ({"label_smoothing": 0.5}, "hyperparameters.label_smoothing"),
    ({"gamma": -1}, "hyperparameters.gamma"),
    ({"cpo_alpha": "lots"}, "hyperparameters.cpo_alpha"),
    ({"desirable_weight": 0}, "hyperparameters.desirable_weight"),
    ({"undesirable_weight": float("inf")}, "hyperparameters.undesirable_weight"),
    ({"beta": 11}, "hyperparameters.beta"),
    ({"simpo_gamma": 1}, "hyperparameters.simpo_gamma"),
])
def test_a_bad_hyperparameter_is_one_error_naming_it(hp, param):
    with pytest.raises(InvalidRequest) as e:
        parse_hyperparameters(hp)
    assert e.value.param == param and e.value.message


def test_openai_method_types_come_from_the_registries():
    assert method_for_type("supervised") == "lora"
    for name in ("dpo", "kto", "orpo", "simpo"):
        assert method_for_type(name) == name
        assert OBJECTIVES.get(METHODS.get(name).objective).openai_type == name
    assert method_for_type("lora") == "lora" and method_for_type("nope") == "nope"


@pytest.fixture
def api(tiny_home):
    from fastapi.testclient import TestClient

    from afinar.server.app import create_app

    app = create_app(auth=False)
    app.state.spawn_workers = False
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _upload_api(api, tmp_path, rows, name):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(p, "rb") as f:
        r = api.post("/v1/files", files={"file": (name, f)}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_the_api_takes_openais_dpo_shape_and_afinars_extensions(api, tmp_path):
    pairs = _upload_api(api, tmp_path, pref_rows(12), "p.jsonl")
    single = _upload_api(api, tmp_path, unpaired_rows(12), "u.jsonl")
    r = api.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": pairs, "method": {
        "type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "loss_type": "ipo"}}}})
    assert r.status_code == 200, r.text
    m = r.json()["method"]
    assert m["type"] == "dpo" and m["dpo"]["hyperparameters"]["loss_type"] == "ipo"
    assert m["dpo"]["hyperparameters"]["beta"] == 0.2
    for kind, file, hp in (("kto", single, {"desirable_weight": 1.5}),
                           ("orpo", pairs, {"beta": 0.05}),
                           ("simpo", pairs, {"gamma": 1.0, "cpo_alpha": 0.1})):
        r = api.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": file,
                                                   "method": {"type": kind, kind: {
                                                       "hyperparameters": hp}}})
        assert r.status_code == 200, r.text
        m = r.json()["method"]
        assert m["type"] == kind and m["afinar"]["method"] == kind
        assert {k: m[kind]["hyperparameters"][k] for k in hp} == hp
    r = api.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": pairs, "method": {
        "type": "dpo", "dpo": {"hyperparameters": {"loss_type": "exo_pair"}}}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "hyperparameters.loss_type"
    r = api.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": pairs,
                                               "method": {"type": "kto"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"


def test_the_cli_takes_the_methods_and_hyperparameters(tiny_home, tmp_path, capsys):
    from tests.helpers import run_cli

    code, out, _ = run_cli(capsys, "tune", "create", "--help")
    assert code == 0 and all(m in out for m in ("kto", "orpo", "simpo", "--hp"))
    p = tmp_path / "u.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in unpaired_rows(12)))
    for hp, needle in (("loss_type=bogus", "loss_type must be auto or one of sigmoid"),
                       ("nope=1", "unknown hyperparameter 'nope'"),
                       ("gamma=-2", "gamma must be >= 0")):
        code, _, err = run_cli(capsys, "tune", "create", "-m", "tiny", "--train", str(p),
                               "--method", "kto", "--hp", hp, "--detach")
        assert code == 2 and err.startswith("error: ") and needle in err, err
    assert Jobs().list() == []
