"""SimPO (Meng et al. 2024), reference-free: the per-token averaged log-probabilities of the
chosen and rejected answers must differ by a target margin ``gamma``, as TRL's CPO trainer
defines it (``loss_type="simpo"``):

    loss = -log s(beta (avg_logp_chosen - avg_logp_rejected) - gamma)

and with ``cpo_alpha`` > 0 (CPO-SimPO) plus ``cpo_alpha`` times the chosen answers'
cross-entropy averaged over their trained tokens. ``beta`` defaults to 2.0, the SimPO authors'
smallest setting (TRL's 0.1 is DPO's scale; the authors use 2 to 10), ``gamma`` to 0.5 (TRL's
``simpo_gamma``). A pair counts as right when its chosen answer has the higher average.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from afinar.tuning.objectives.base import Item, register
from afinar.tuning.objectives.pairs import PairLogps, PairObjective


def simpo_loss(lp: PairLogps, beta: float, gamma: float, cpo_alpha: float = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss and the per-pair losses before the NLL term."""
    avg_c, avg_r = lp.averages()
    losses = -F.logsigmoid(beta * ((avg_c - avg_r) - gamma / beta))  # TRL's arithmetic
    loss = losses.mean()
    if cpo_alpha:
        loss = loss + cpo_alpha * lp.chosen_nll()
    return loss, losses


@register
class Simpo(PairObjective):
    name = "simpo"
    openai_type = "simpo"  # afinar's extension of OpenAI's method types
    hyperparameters = {"beta": 2.0, "gamma": 0.5, "cpo_alpha": 0.0}

    def pair_loss(self, model, items: list[Item]) -> tuple[torch.Tensor, int]:
        lp = self.policy_logps(model, items)
        hp = self.ctx.hp
        loss, _ = simpo_loss(lp, hp.beta, hp.gamma, hp.cpo_alpha or 0.0)
        avg_c, avg_r = lp.averages()
        return loss, int((avg_c > avg_r).sum())
