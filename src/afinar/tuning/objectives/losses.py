"""Losses over the trained positions without the full-vocabulary logits (the chunked loss).

A 135M model's output layer maps 576 hidden units onto 49,152 tokens: the logits of 500 trained
positions are 98 MB in float32, and autograd keeps their float copy, the softmax and the
gradient as well. Here the hidden states of the trained positions are projected onto the
vocabulary ``chunk`` rows at a time (Liger's and Unsloth's fused linear cross-entropy), so at
most one chunk's logits exist at any moment, in the forward pass and in the backward pass:

- a summed loss (``cross_entropy_sum``: SFT) has one scalar gradient, so each chunk's gradient
  with respect to its hidden states (and to the output weights when they train) is computed
  in the forward pass, where the chunk's softmax is at hand, and only scaled in backward: no
  recomputation, the same three matmuls as an unchunked loss;
- per-token log-probabilities (``token_logps``, ``sequence_logps``: DPO and the objectives
  built on it) have one gradient per token, so the forward pass keeps the hidden-state
  gradient per unit of each token's gradient (``hidden``-sized) and, when the output weights
  train (a full fine-tune), backward recomputes each chunk's logits once for their gradient.

An output layer that is not a plain ``nn.Linear`` (a LoRA wrapped around it, a plugin's head)
runs through ``torch.utils.checkpoint`` per chunk instead: the same bound on memory, one more
forward of the head. Every chunk's logits come from ``chunk_logits``, the one place they are
made (the tests count its rows). ``chunk`` (``AFINAR_LOSS_CHUNK_TOKENS``, default 256) 0 is the
unchunked reference, the arithmetic of ``logits_at_targets``.
The results equal the unchunked loss and gradients to float rounding (summation order).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from afinar.settings import get_settings
from afinar.tuning.objectives.base import Batch


def default_chunk() -> int:
    """``AFINAR_LOSS_CHUNK_TOKENS`` (256: 256 x 49,152 float32 logits = 50 MB per chunk). A
    process setting, not a hyperparameter: it changes memory and speed, not the result."""
    return get_settings().loss_chunk_tokens


def chunk_logits(h: torch.Tensor, head: Callable | None, weight: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """Float32 logits of one chunk of hidden states: every logit this module makes."""
    out = head(h) if head is not None else F.linear(h, weight, bias)
    return out.float()


def trained_hidden(model, b: Batch, full_forward: bool = False
                   ) -> tuple[torch.Tensor, torch.nn.Module, torch.Tensor]:
    """The last hidden states (after the final norm) at the trained positions, the output
    layer, and the mask of those positions: what ``logits_at_targets`` projects."""
    sel = b.targets != -100
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    if full_forward:
        # PEFT prepends virtual tokens inside its own forward: run it, keep the decoder's
        # output, and let the model project only its last position (``logits_to_keep``)
        seen: list[torch.Tensor] = []
        hook = decoder.register_forward_hook(
            lambda _m, _a, out: seen.append(out.last_hidden_state if hasattr(
                out, "last_hidden_state") else out[0]))
        try:
            model(input_ids=b.ids, attention_mask=b.mask, use_cache=False, logits_to_keep=1)
        finally:
            hook.remove()
        return seen[-1][:, -b.ids.shape[1]:][sel], head, sel
    hidden = decoder(input_ids=b.ids, attention_mask=b.mask, use_cache=False).last_hidden_state
    return hidden[sel], head, sel


def _plain(head) -> bool:
    """A bare ``nn.Linear`` with no hooks: its weight and bias are the whole computation."""
    return (type(head) is torch.nn.Linear and not head._forward_hooks
            and not head._forward_pre_hooks)


class _FusedLinearNll(torch.autograd.Function):
    """Per-token negative log-likelihood of ``F.linear(h, weight, bias)`` at ``targets``,
    ``chunk`` rows at a time; the second output counts the argmax hits (no gradient).
    ``summed``: the output is the sum, and gradients are made in the forward pass."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk, summed, need_h, need_w):
        n = h.shape[0]
        nll = torch.empty(n, dtype=torch.float32, device=h.device)
        hits = torch.zeros((), dtype=torch.long, device=h.device)
        gh = torch.empty_like(h) if need_h else None  # d(output)/dh per unit of grad_output
        gw = torch.zeros_like(weight) if need_w and summed else None
        gb = torch.zeros_like(bias) if need_w and summed and bias is not None else None
        for s in range(0, n, chunk):
            hc, tc = h[s:s + chunk], targets[s:s + chunk]
            logits = chunk_logits(hc, None, weight, bias)
            hits += (logits.argmax(-1) == tc).sum()
            lse = logits.logsumexp(-1)
            nll[s:s + chunk] = lse - logits.gather(1, tc[:, None]).squeeze(1)
            if gh is None and gw is None:
                continue
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' buffer
            grad[torch.arange(len(tc), device=grad.device), tc] -= 1  # d nll / d logits
            grad = grad.to(h.dtype)
            if gh is not None:
                gh[s:s + chunk] = grad @ weight
            if gw is not None:
                gw.addmm_(grad.t(), hc)
                if gb is not None:
                    gb += grad.sum(0)
            del grad, logits
        ctx.summed, ctx.chunk, ctx.need_w = summed, chunk, need_w
        ctx.has_bias = bias is not None
        ctx.save_for_backward(gh, gw, gb, h, weight, bias, targets)
        ctx.mark_non_differentiable(hits)
        return (nll.sum() if summed else nll), hits

    @staticmethod
    def backward(ctx, g, _hits):
        gh, gw, gb, h, weight, bias, targets = ctx.saved_tensors
        if ctx.summed:  # g is the scalar the summed loss was scaled by
            return (gh * g.to(gh.dtype) if gh is not None else None,
                    gw * g.to(gw.dtype) if gw is not None else None,
                    gb * g.to(gb.dtype) if gb is not None else None,
                    None, None, None, None, None)
        dh = gh * g[:, None].to(gh.dtype) if gh is not None else None
        dw = db = None
        if ctx.need_w:  # one gradient per token: recompute each chunk's softmax once
            dw = torch.zeros_like(weight)
            db = torch.zeros_like(bias) if ctx.has_bias else None
            for s in range(0, h.shape[0], ctx.chunk):
                hc, tc = h[s:s + ctx.chunk], targets[s:s + ctx.chunk]
                grad = chunk_logits(hc, None, weight, bias).softmax(-1)
                grad[torch.arange(len(tc), device=grad.device), tc] -= 1
                grad = (grad * g[s:s + ctx.chunk, None]).to(h.dtype)
                dw.addmm_(grad.t(), hc)
                if db is not None:
                    db += grad.sum(0)
                del grad
        return dh, dw, db, None, None, None, None, None


def _checkpointed_nll(h, head, targets, chunk) -> tuple[torch.Tensor, torch.Tensor]:
    """Any output layer: each chunk's logits recomputed in backward by ``checkpoint``."""
    def piece(hc, tc):
        logits = chunk_logits(hc, head)
        nll = logits.logsumexp(-1) - logits.gather(1, tc[:, None]).squeeze(1)
        return nll, (logits.argmax(-1) == tc).sum()

    nlls, hits = [], torch.zeros((), dtype=torch.long, device=h.device)
    grad = torch.is_grad_enabled()
    for s in range(0, h.shape[0], chunk):
        hc, tc = h[s:s + chunk], targets[s:s + chunk]
        nll, hit = (checkpoint(piece, hc, tc, use_reentrant=False) if grad
                    else piece(hc, tc))
        nlls.append(nll)
        hits = hits + hit.detach()
    if not nlls:
        return h.new_zeros(0, dtype=torch.float32), hits
    return torch.cat(nlls), hits


def token_nll(h: torch.Tensor, head, targets: torch.Tensor, chunk: int | None = None,
              summed: bool = False) -> tuple[torch.Tensor, int]:
    """Negative log-likelihood per trained position (or its sum) and the argmax hits, for
    hidden states ``h`` [n, hidden] under the output layer ``head``; ``chunk`` rows at a time
    (0: all at once, the reference; None: ``default_chunk()``)."""
    chunk = default_chunk() if chunk is None else chunk
    if chunk <= 0 or h.shape[0] == 0:
        logits = chunk_logits(h, head)
        nll = F.cross_entropy(logits, targets, reduction="sum" if summed else "none")
        return nll, int((logits.argmax(-1) == targets).sum())
    if _plain(head):
        grad = torch.is_grad_enabled()
        w, b = head.weight, head.bias
        need_h = grad and h.requires_grad
        need_w = grad and (w.requires_grad or (b is not None and b.requires_grad))
        nll, hits = _FusedLinearNll.apply(h, w, b, targets, chunk, summed, need_h, need_w)
        return nll, int(hits)
    nll, hits = _checkpointed_nll(h, head, targets, chunk)
    return (nll.sum() if summed else nll), int(hits)


def cross_entropy_sum(model, b: Batch, full_forward: bool = False, chunk: int | None = None
                      ) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch's trained positions, and the right predictions."""
    h, head, sel = trained_hidden(model, b, full_forward)
    return token_nll(h, head, b.targets[sel], chunk, summed=True)


def token_logps(model, b: Batch, full_forward: bool = False, chunk: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) at each trained position (a flat vector in row-major order), and the row
    of the batch each belongs to: what KTO/ORPO/SimPO-style objectives average or sum."""
    h, head, sel = trained_hidden(model, b, full_forward)
    nll, _ = token_nll(h, head, b.targets[sel], chunk)
    return -nll, sel.nonzero()[:, 0]


def sequence_logps(model, b: Batch, full_forward: bool = False, chunk: int | None = None
                   ) -> torch.Tensor:
    """Per-sequence sum of log p(trained tokens): what DPO compares."""
    lp, rows = token_logps(model, b, full_forward, chunk)
    return torch.zeros(b.ids.shape[0], device=lp.device, dtype=lp.dtype).index_add(0, rows, lp)
