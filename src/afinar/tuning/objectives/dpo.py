"""DPO (Rafailov et al. 2023): the policy's log-ratio of chosen over rejected against the
reference's, through a loss of ``loss_type`` scaled by ``beta`` (TRL's definitions, with
l = log pi - log pi_ref summed over an answer's trained tokens and D = l_chosen - l_rejected):

- ``sigmoid`` (the default): -log s(beta D);
- ``hinge`` (SLiC): max(0, 1 - beta D);
- ``ipo`` (Azar et al. 2023): (D' - 1/(2 beta))^2, D' the difference of per-token *averaged*
  log-ratios;
- ``robust`` (Chowdhury et al. 2024): [-(1-e) log s(beta D) + e log s(-beta D)] / (1-2e), e the
  ``label_smoothing`` (the assumed share of flipped labels, in [0, 0.5));
- ``sigmoid_norm``: -log s(beta D') (length-normalised, still against the reference).

The reference is the same base with the adapter switched off (``disable_adapter``), and its
log-probabilities are computed once, before the first step (``precompute``), batched as the first
epoch and the first evaluations meet the pairs: no second copy of the model in memory and no
reference forward pass per step (the memory problem users hit with DPO, TRL #3168). They are
part of the training state, so a resumed job never computes them again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any

import torch
import torch.nn.functional as F

from afinar.tuning.hparams import DPO_LOSS_TYPES
from afinar.tuning.objectives.base import Item, StepPart, as_reference, register
from afinar.tuning.objectives.pairs import PairObjective

Tensor = torch.Tensor


def _robust(margin: Tensor, eps: float) -> Tensor:
    return (-F.logsigmoid(margin) * (1 - eps) + F.logsigmoid(-margin) * eps) / (1 - 2 * eps)


# loss_type -> (per-token averaged log-ratios?, per-pair loss of (margin, beta, eps)); the
# margin is beta D (sums) or D' (averages: ipo, sigmoid_norm scale it themselves)
LOSSES: dict[str, tuple[bool, Callable[[Tensor, float, float], Tensor]]] = {
    "sigmoid": (False, lambda m, beta, eps: -F.logsigmoid(m)),
    "hinge": (False, lambda m, beta, eps: torch.relu(1 - m)),
    "ipo": (True, lambda d, beta, eps: (d - 1 / (2 * beta)) ** 2),
    "robust": (False, lambda m, beta, eps: _robust(m, eps)),
    "sigmoid_norm": (True, lambda d, beta, eps: -F.logsigmoid(beta * d)),
}
assert tuple(LOSSES) == DPO_LOSS_TYPES  # the hyperparameter's choices are these


def dpo_losses(loss_type: str, beta: float, label_smoothing: float, chosen: Tensor,
               rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
               n_chosen: Tensor | None = None, n_rejected: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
    """Per-pair losses and margins (positive: the pair is ranked right) from summed
    log-probabilities; ``n_*``: trained tokens per answer, for the averaged loss types."""
    averaged, fn = LOSSES[loss_type]
    if averaged:  # TRL counts at least one token
        margin = ((chosen - ref_chosen) / n_chosen.clamp(min=1.0)
                  - (rejected - ref_rejected) / n_rejected.clamp(min=1.0))
    else:
        margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    return fn(margin, beta, label_smoothing), margin


@register
class Dpo(PairObjective):
    name = "dpo"
    openai_type = "dpo"
    hyperparameters = {"beta": 0.1, "loss_type": "sigmoid", "label_smoothing": 0.0}
    precomputes = "reference log-probabilities"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.ref: dict[Any, tuple[float, float]] = {}  # key -> (chosen, rejected) log-probs

    def precompute(self, model, parts: Iterable[StepPart],
                   evaluations: Iterable[list[Item]]) -> Iterator[int]:
        for items in chain((p.items for p in parts), evaluations):
            if done := self._reference(model, items):
                yield done

    def state_dict(self) -> dict[str, Any]:
        return {"ref": self.ref}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.ref = dict(sd.get("ref") or {})

    # -- the pieces ---------------------------------------------------------------------------
    @torch.no_grad()
    def _reference(self, model, items: list[Item]) -> int:
        """Reference log-probs of the items not computed yet (in eval mode: the reference is
        the base as it serves, without dropout); how many that was."""
        todo = [(k, s) for k, s in items if k not in self.ref]
        if not todo:
            return 0
        with as_reference(model):
            lp = self.policy_logps(model, todo)
        for (k, _), ci, ri in zip(todo, lp.chosen.tolist(), lp.rejected.tolist()):
            self.ref[k] = (ci, ri)
        return len(todo)

    def pair_loss(self, model, items: list[Item]) -> tuple[torch.Tensor, int]:
        self._reference(model, items)  # computed ahead; here only for pairs it did not meet
        lp = self.policy_logps(model, items)
        ref = torch.tensor([self.ref[k] for k, _ in items], device=lp.chosen.device)
        hp = self.ctx.hp
        losses, margin = dpo_losses(hp.loss_type or "sigmoid", hp.beta,
                                    hp.label_smoothing or 0.0, lp.chosen, lp.rejected,
                                    ref[:, 0], ref[:, 1], lp.n_chosen, lp.n_rejected)
        return losses.mean(), int((margin > 0).sum())
