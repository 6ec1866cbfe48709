"""Cross-entropy over the trained positions (supervised fine-tuning; continued pretraining, whose
examples train every token), averaged over the step's trained tokens; computed by the chunked
loss (``losses.cross_entropy_sum``), so the full-vocabulary logits never exist for more than
``AFINAR_LOSS_CHUNK_TOKENS`` positions at once."""

from __future__ import annotations

import torch

from afinar.tuning.objectives.base import (
    Batch,
    EvalSums,
    Item,
    Objective,
    PartLoss,
    StepPart,
    make_batch,
    register,
)
from afinar.tuning.objectives.losses import cross_entropy_sum


def token_loss(model, b: Batch, full_forward: bool = False, chunk: int | None = None
               ) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over trained positions, and how many predictions were right
    (``chunk``: positions per projection, None: the setting, 0: unchunked)."""
    return cross_entropy_sum(model, b, full_forward, chunk)


@register
class CrossEntropy(Objective):
    name = "sft"

    def parts(self, batches: list[list[Item]]) -> list[StepPart]:
        # Bound the padded tokens of one forward pass: activations dominate memory, and a CPU
        # loses nothing by running a long batch as a few smaller passes. The loss is normalised
        # over the whole step's trained tokens, so the update is the same.
        c = self.ctx
        out = []
        for items in batches:
            for part in split_by_tokens(items, c.hp.max_tokens_per_forward):
                b = make_batch([s for _, s in part], c.pad_id, c.device)
                out.append(StepPart(part, b.n_targets, int(b.mask.sum()), b))
        return out

    def loss(self, model, part: StepPart) -> PartLoss:
        loss, ok = token_loss(model, part.batch, self.ctx.full_forward)
        return PartLoss(loss, float(loss.detach()), ok)

    def evaluate(self, model, items: list[Item]) -> EvalSums:
        c = self.ctx
        b = make_batch([s for _, s in items], c.pad_id, c.device)
        loss, ok = token_loss(model, b, c.full_forward)
        return EvalSums(float(loss), ok, b.n_targets)


def split_by_tokens(items: list[Item], budget: int) -> list[list[Item]]:
    """Consecutive parts whose padded size (count x longest) stays within ``budget``."""
    parts: list[list[Item]] = [[]]
    for item in items:
        part = parts[-1]
        width = max([s.seq.n_tokens for _, s in part] + [item[1].seq.n_tokens])
        if part and width * (len(part) + 1) > budget:
            parts.append([item])
        else:
            part.append(item)
    return parts

