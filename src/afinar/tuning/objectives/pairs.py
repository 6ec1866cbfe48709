"""What the objectives on preference pairs share (``dpo``, ``orpo``, ``simpo``): a step's parts
are its gradient-accumulation batches of pairs, a part's loss is the mean over its pairs times
their count (the trainer divides by the step's pairs), validation sums the same; and the
policy's log-probabilities of each chosen and rejected answer, summed over its trained tokens,
with the number of those tokens (``|y|``, for the per-token averages of IPO, SimPO and ORPO).

A subclass defines ``pair_loss(model, items) -> (mean loss, pairs ranked right)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from afinar.tuning.objectives.base import (
    Batch,
    EvalSums,
    Item,
    Objective,
    PartLoss,
    StepPart,
    logits_at_targets,
    make_batch,
)


def sequence_logps(model, b: Batch, full_forward: bool = False) -> torch.Tensor:
    """Per-sequence sum of log p(trained tokens): what DPO compares."""
    logits, sel = logits_at_targets(model, b, full_forward)
    lp = logits.float().log_softmax(-1).gather(1, b.targets[sel][:, None]).squeeze(1)
    rows = sel.nonzero()[:, 0]
    return torch.zeros(b.ids.shape[0], device=lp.device, dtype=lp.dtype).index_add(0, rows, lp)


def trained_counts(b: Batch) -> torch.Tensor:
    """Trained tokens (targets) per sequence of the batch, as floats: ``|y|``."""
    return (b.targets != -100).sum(1).float()


@dataclass
class PairLogps:
    chosen: torch.Tensor  # log p summed over each chosen answer's trained tokens
    rejected: torch.Tensor
    n_chosen: torch.Tensor  # trained tokens of each chosen answer
    n_rejected: torch.Tensor

    def averages(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token average log-probabilities (log of the average token probability's
        geometric mean): what SimPO and ORPO compare."""
        return self.chosen / self.n_chosen, self.rejected / self.n_rejected

    def chosen_nll(self) -> torch.Tensor:
        """Cross-entropy of the chosen answers averaged over all their trained tokens (TRL's
        NLL term of ORPO and CPO)."""
        return -self.chosen.sum() / self.n_chosen.sum()


def pair_logps(model, items: list[Item], pad_id: int, device: str,
               full_forward: bool = False) -> PairLogps:
    samples = [s for _, s in items]
    bc = make_batch(samples, pad_id, device)
    br = make_batch(samples, pad_id, device, rejected=True)
    return PairLogps(sequence_logps(model, bc, full_forward),
                     sequence_logps(model, br, full_forward), trained_counts(bc),
                     trained_counts(br))


class PairObjective(Objective):
    """Parts, losses and validation sums over batches of pairs; ``pair_loss`` is the loss."""

    def parts(self, batches: list[list[Item]]) -> list[StepPart]:
        return [StepPart(items, len(items), sum(s.seq.n_tokens + s.rejected.n_tokens
                                                for _, s in items)) for items in batches]

    def loss(self, model, part: StepPart) -> PartLoss:
        loss, right = self.pair_loss(model, part.items)
        n = len(part.items)
        # the pairs' mean times their count: summed over the part, as the trainer expects
        return PartLoss(loss * n, float(loss.detach()) * n, right)

    def evaluate(self, model, items: list[Item]) -> EvalSums:
        loss, right = self.pair_loss(model, items)
        return EvalSums(float(loss) * len(items), right, len(items))

    def policy_logps(self, model, items: list[Item]) -> PairLogps:
        c = self.ctx
        return pair_logps(model, items, c.pad_id, c.device, c.full_forward)

    def pair_loss(self, model, items: list[Item]) -> tuple[torch.Tensor, int]:
        raise NotImplementedError
