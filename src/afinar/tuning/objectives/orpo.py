"""ORPO (Hong et al. 2024), reference-free: the chosen answer's cross-entropy plus a log-odds
ratio term, as TRL defines it. With p the average token probability of an answer (log p its
per-token averaged log-probability), log-odds = log p - log(1 - p), and

    loss = NLL(chosen) - beta * mean log s(log-odds_chosen - log-odds_rejected)

(``beta`` is the paper's lambda, 0.1), log(1 - p) computed stably (TRL's ``log1mexp``).
NLL(chosen) is the cross-entropy averaged over the chosen answers' trained tokens, the paper's
SFT term (TRL 1.16's ORPO trainer also counts the prompt's tokens there; afinar trains on the
answer only, as every other objective). No reference model, so nothing to compute first.
A pair counts as right when its chosen answer has the higher average log-probability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from afinar.tuning.objectives.base import Item, register
from afinar.tuning.objectives.pairs import PairLogps, PairObjective


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, without cancellation (branching at -ln 2)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)),
                       torch.log(-torch.expm1(x)))


def orpo_loss(lp: PairLogps, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss and the per-pair log-odds ratios log s(log-odds_c - log-odds_r)."""
    avg_c, avg_r = lp.averages()
    log_odds = (avg_c - avg_r) - (log1mexp(avg_c) - log1mexp(avg_r))
    ratio = F.logsigmoid(log_odds)
    return lp.chosen_nll() - beta * ratio.mean(), ratio


@register
class Orpo(PairObjective):
    name = "orpo"
    openai_type = "orpo"  # afinar's extension of OpenAI's method types
    hyperparameters = {"beta": 0.1}

    def pair_loss(self, model, items: list[Item]) -> tuple[torch.Tensor, int]:
        lp = self.policy_logps(model, items)
        loss, _ = orpo_loss(lp, self.ctx.hp.beta)
        avg_c, avg_r = lp.averages()
        return loss, int((avg_c > avg_r).sum())
