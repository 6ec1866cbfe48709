"""KTO (Ethayarajh et al. 2024) on unpaired answers, each labelled desirable or not, as TRL's
``KTOTrainer`` defines it. With l = log pi - log pi_ref summed over an answer's trained tokens:

- the KL estimate z is the mean l over *mismatched* pairs of the batch (each prompt with the
  answer of the row before it, TRL's shift by one), computed without gradient and clamped at 0;
- a desirable answer's loss is 1 - s(beta (l - z)), an undesirable one's 1 - s(beta (z - l)),
  weighted by ``desirable_weight`` / ``undesirable_weight``, averaged over the batch's rows.

A batch of one row has no mismatched pair: its z is 0 (TRL's KTO without the KL term; TRL
requires batches of two or more instead). The reference is the base with the adapter switched
off, its log-probabilities of the answers and of the mismatched pairs computed before the first
step for the first epoch and the validation batches (``precompute``, as DPO's) and kept in the
training state; the pairs later epochs' batches make are computed when first met. A row counts
as right when l - z has the sign of its label.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

import torch

from afinar.data.encode import Encoded
from afinar.tuning.objectives.base import (
    EvalSums,
    Item,
    Objective,
    PartLoss,
    StepPart,
    as_reference,
    make_batch,
    register,
)
from afinar.tuning.objectives.pairs import sequence_logps, trained_counts
from afinar.tuning.samples import Sample

Tensor = torch.Tensor


def kto_losses(logps: Tensor, ref: Tensor, kl_logps: Tensor, kl_ref: Tensor, labels: Tensor,
               beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
               ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row losses, the KL estimate z and the log-ratios l of the rows (``labels``: True for
    desirable). ``kl_*``: the mismatched pairs' log-probabilities (empty: z = 0)."""
    if kl_logps.numel():
        z = (kl_logps - kl_ref).mean().detach().clamp(min=0)
    else:
        z = torch.zeros((), device=logps.device, dtype=logps.dtype)
    ratio = logps - ref
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (ratio - z)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z - ratio)))
    return torch.where(labels, desirable, undesirable), z, ratio


def answer_start(e: Encoded) -> int:
    """Where the answer begins: the first trained token (the prompt is everything before)."""
    return next((i for i, t in enumerate(e.trained) if t), e.n_tokens)


def mismatched(prompt_of: Encoded, answer_of: Encoded, max_len: int) -> Encoded:
    """The prompt of one row followed by the answer of another, cut at ``max_len``."""
    p, a = answer_start(prompt_of), answer_start(answer_of)
    ids = prompt_of.input_ids[:p] + answer_of.input_ids[a:]
    trained = [False] * p + answer_of.trained[a:]
    return Encoded(ids[:max_len], trained[:max_len])


@register
class Kto(Objective):
    name = "kto"
    openai_type = "kto"  # afinar's extension of OpenAI's method types
    hyperparameters = {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0}
    precomputes = "reference log-probabilities"

    def __init__(self, ctx):
        super().__init__(ctx)
        # a row's key -> the reference log-prob of its answer; (key, other key) -> that of
        # the row's prompt with the other row's answer (a mismatched pair)
        self.ref: dict[Any, float] = {}

    def parts(self, batches: list[list[Item]]) -> list[StepPart]:
        return [StepPart(items, len(items), sum(s.seq.n_tokens for _, s in items))
                for items in batches]

    def loss(self, model, part: StepPart) -> PartLoss:
        loss, right = self._loss(model, part.items)
        n = len(part.items)
        return PartLoss(loss * n, float(loss.detach()) * n, right)

    def evaluate(self, model, items: list[Item]) -> EvalSums:
        loss, right = self._loss(model, items)
        return EvalSums(float(loss) * len(items), right, len(items))

    def precompute(self, model, parts: Iterable[StepPart],
                   evaluations: Iterable[list[Item]]) -> Iterator[int]:
        for items in chain((p.items for p in parts), evaluations):
            if done := self._reference(model, items + self._mismatched(items)):
                yield done

    def state_dict(self) -> dict[str, Any]:
        return {"ref": self.ref}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.ref = dict(sd.get("ref") or {})

    # -- the pieces ---------------------------------------------------------------------------
    def _mismatched(self, items: list[Item]) -> list[Item]:
        """Each row's prompt with the previous row's answer (the first with the last's)."""
        if len(items) < 2:
            return []
        n = self.ctx.hp.max_seq_len
        return [((k, items[i - 1][0]), Sample(mismatched(s.seq, items[i - 1][1].seq, n)))
                for i, (k, s) in enumerate(items)]

    def _logps(self, model, items: list[Item]) -> tuple[Tensor, Tensor]:
        c = self.ctx
        b = make_batch([s for _, s in items], c.pad_id, c.device)
        return sequence_logps(model, b, c.full_forward), trained_counts(b)

    @torch.no_grad()
    def _reference(self, model, items: list[Item]) -> int:
        todo = [(k, s) for k, s in items if k not in self.ref]
        if not todo:
            return 0
        with as_reference(model):
            lp, _ = self._logps(model, todo)
        for (k, _), v in zip(todo, lp.tolist()):
            self.ref[k] = v
        return len([k for k, _ in todo if not isinstance(k[0], tuple)])  # rows, not pairs

    def _loss(self, model, items: list[Item]) -> tuple[Tensor, int]:
        kl_items = self._mismatched(items)
        self._reference(model, items + kl_items)  # computed ahead; here only what it did not meet
        logps, _ = self._logps(model, items)
        dev = logps.device
        ref = torch.tensor([self.ref[k] for k, _ in items], device=dev)
        kl_logps = kl_ref = torch.zeros(0, device=dev)
        if kl_items:
            with torch.no_grad():
                kl_logps, n = self._logps(model, kl_items)
            kl_ref = torch.tensor([self.ref[k] for k, _ in kl_items], device=dev)
            keep = n > 0  # a pair cut to no answer at max_seq_len says nothing
            kl_logps, kl_ref = kl_logps[keep], kl_ref[keep]
        labels = torch.tensor([bool(s.label) for _, s in items], device=dev)
        hp = self.ctx.hp
        losses, z, ratio = kto_losses(logps, ref, kl_logps, kl_ref, labels, hp.beta,
                                      hp.desirable_weight, hp.undesirable_weight)
        return losses.mean(), int(((ratio - z > 0) == labels).sum())
