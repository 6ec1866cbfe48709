"""The chunked loss (``tuning/objectives/losses.py``) against the unchunked reference
(``logits_at_targets``, the full logits of every trained position): the same loss, per-sequence
log-probabilities, accuracy counts and gradients of every trained parameter (LoRA, a full
fine-tune with tied embeddings, prompt tuning's wrapped forward, a head with a bias, a head that
is not a plain Linear), and no chunk's logits wider than ``chunk`` rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from afinar.tuning.objectives import losses
from afinar.tuning.objectives.base import Batch, logits_at_targets
from afinar.tuning.objectives.sft import token_loss

RTOL = 1e-5


def batch(vocab: int, seed: int = 0, rows: int = 3, width: int = 23) -> Batch:
    """Padded rows (right padding, like ``collate``) whose later halves train."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (rows, width), generator=g)
    mask = torch.ones_like(ids)
    targets = torch.full_like(ids, -100)
    for r, n in enumerate([width, width - 5, width - 11][:rows]):
        mask[r, n:] = 0
        ids[r, n:] = 2
        targets[r, n // 2:n - 1] = ids[r, n // 2 + 1:n]
    return Batch(ids, mask, targets)


def reference_ce(model, b, full_forward=False):
    logits, sel = logits_at_targets(model, b, full_forward)
    t = b.targets[sel]
    return (F.cross_entropy(logits.float(), t, reduction="sum"),
            int((logits.argmax(-1) == t).sum()))


def reference_logps(model, b, full_forward=False):
    logits, sel = logits_at_targets(model, b, full_forward)
    lp = logits.float().log_softmax(-1).gather(1, b.targets[sel][:, None]).squeeze(1)
    rows = sel.nonzero()[:, 0]
    return torch.zeros(b.ids.shape[0]).index_add(0, rows, lp)


def grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert out and all(g is not None for g in out.values())
    return out


def assert_close(a, b):
    torch.testing.assert_close(a, b, rtol=RTOL, atol=1e-7)


def assert_same_grads(ga, gb):
    assert ga.keys() == gb.keys()
    for n in ga:
        # relative to the tensor's own scale, so a near-zero entry does not decide alone
        err = (ga[n] - gb[n]).abs().max() / gb[n].abs().max().clamp_min(1e-12)
        assert err <= RTOL, (n, float(err))


def open_model(folder, kind: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if kind == "full":
        for p in m.parameters():
            p.requires_grad_(True)
        return m
    from peft import LoraConfig, PromptTuningConfig, get_peft_model

    if kind == "lora":
        m = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                         lora_dropout=0.0))
        for n, p in m.named_parameters():  # LoRA's B starts at 0: give every factor a grad
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.02)
        return m
    if kind == "lora-head":  # the output layer itself wrapped: the checkpointed path
        return get_peft_model(m, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                            target_modules=["q_proj", "lm_head"],
                                            init_lora_weights="gaussian"))
    return get_peft_model(m, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))


@pytest.mark.parametrize("kind", ["lora", "full", "lora-head", "prompt"])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_cross_entropy_equals_the_full_logits(tiny_model_template, kind, chunk):
    model = open_model(tiny_model_template, kind).train()
    full_forward = kind == "prompt"
    b = batch(model.config.vocab_size)
    ref, ref_ok = reference_ce(model, b, full_forward)
    ref_g = grads(model, ref / 17)  # the trainer divides by the step's trained tokens
    loss, ok = token_loss(model, b, full_forward, chunk=chunk)
    assert_close(loss, ref)
    assert ok == ref_ok
    assert_same_grads(grads(model, loss / 17), ref_g)


@pytest.mark.parametrize("kind", ["lora", "full", "prompt"])
def test_chunked_sequence_logps_and_their_gradients(tiny_model_template, kind):
    """DPO's per-sequence log-probs: a different weight per sequence, as its loss gives."""
    model = open_model(tiny_model_template, kind).train()
    full_forward = kind == "prompt"
    b = batch(model.config.vocab_size, seed=1)
    weights = torch.tensor([0.7, -1.3, 2.1])
    ref = reference_logps(model, b, full_forward)
    ref_g = grads(model, (ref * weights).sum())
    lp = losses.sequence_logps(model, b, full_forward, chunk=5)
    assert_close(lp, ref)
    assert_same_grads(grads(model, (lp * weights).sum()), ref_g)


def test_the_setting_sizes_the_chunks_and_no_chunk_is_wider(tiny_model_template, home,
                                                            monkeypatch):
    model = open_model(tiny_model_template, "lora").train()
    b = batch(model.config.vocab_size)
    n = int((b.targets != -100).sum())
    seen: list[int] = []
    real = losses.chunk_logits

    def counting(h, *a, **k):
        out = real(h, *a, **k)
        seen.append(out.shape[0])
        return out

    monkeypatch.setattr(losses, "chunk_logits", counting)
    from afinar.settings import reset_settings

    monkeypatch.setenv("AFINAR_LOSS_CHUNK_TOKENS", "6")
    reset_settings()
    loss, _ = token_loss(model, b)  # None: the setting
    loss.backward()
    assert seen and max(seen) == 6 and sum(seen) == n  # every position once, 6 at most
    seen.clear()
    lp = losses.sequence_logps(model, b)
    lp.sum().backward()
    assert max(seen) == 6 and sum(seen) == n
    seen.clear()
    monkeypatch.setenv("AFINAR_LOSS_CHUNK_TOKENS", "0")  # the unchunked reference
    reset_settings()
    token_loss(model, b)
    assert seen == [n]


def test_full_fine_tune_logps_recompute_each_chunk_once_in_backward(tiny_model_template,
                                                                     monkeypatch):
    """Per-token gradients with trained output weights: forward projects each chunk once and
    backward once more (for the weight gradient); a frozen head needs no recomputation."""
    calls = []
    real = losses.chunk_logits
    monkeypatch.setattr(losses, "chunk_logits", lambda h, *a, **k: calls.append(h.shape[0])
                        or real(h, *a, **k))
    b = batch(400, seed=2)
    n = int((b.targets != -100).sum())
    for kind, passes in (("full", 2), ("lora", 1)):
        model = open_model(tiny_model_template, kind).train()
        calls.clear()
        losses.sequence_logps(model, b, chunk=4).sum().backward()
        assert sum(calls) == passes * n and max(calls) <= 4, kind
        calls.clear()
        token_loss(model, b, chunk=4)[0].backward()  # summed: gradients made in forward
        assert sum(calls) == n, kind


@pytest.mark.parametrize("summed", [True, False])
def test_fused_head_with_a_bias(summed):
    """A head with a bias (not Llama's), every input and weight trained."""
    torch.manual_seed(3)
    head = torch.nn.Linear(16, 50, bias=True)
    h0 = torch.randn(29, 16)
    t = torch.randint(0, 50, (29,))
    scale = torch.randn(29)

    def run(chunk):
        h = h0.clone().requires_grad_(True)
        head.zero_grad(set_to_none=True)
        out, hits = losses.token_nll(h, head, t, chunk, summed=summed)
        (out * 3.0 if summed else out * scale).sum().backward()
        return out.detach(), hits, h.grad, head.weight.grad.clone(), head.bias.grad.clone()

    ref, got = run(0), run(4)
    assert ref[1] == got[1]
    for a, b in zip(got[:1] + got[2:], ref[:1] + ref[2:]):
        assert_same_grads({"x": a}, {"x": b})


def test_no_gradient_work_without_grad(tiny_model_template):
    """Validation (``torch.no_grad``) gets the same numbers and builds no graph."""
    model = open_model(tiny_model_template, "lora").eval()
    b = batch(model.config.vocab_size)
    with torch.no_grad():
        ref, ref_ok = reference_ce(model, b)
        loss, ok = token_loss(model, b, chunk=3)
    assert not loss.requires_grad and ok == ref_ok
    assert_close(loss, ref)
