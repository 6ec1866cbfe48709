"""DPO (Rafailov et al. 2023): the policy's log-ratio of chosen over rejected against the
reference's, through a log-sigmoid scaled by ``beta``.

The reference is the same base with the adapter switched off (``disable_adapter``), and its
log-probabilities are computed once, before the first step (``precompute``), batched as the first
epoch and the first evaluations meet the pairs: no second copy of the model in memory and no
reference forward pass per step (the memory problem users hit with DPO, TRL #3168). They are
part of the training state, so a resumed job never computes them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

import torch
import torch.nn.functional as F

from afinar.tuning.objectives.base import (
    Batch,
    EvalSums,
    Item,
    Objective,
    PartLoss,
    StepPart,
    logits_at_targets,
    make_batch,
    register,
)


def sequence_logps(model, b: Batch, full_forward: bool = False) -> torch.Tensor:
    """Per-sequence sum of log p(trained tokens): what DPO compares."""
    logits, sel = logits_at_targets(model, b, full_forward)
    lp = logits.float().log_softmax(-1).gather(1, b.targets[sel][:, None]).squeeze(1)
    rows = sel.nonzero()[:, 0]
    return torch.zeros(b.ids.shape[0], device=lp.device, dtype=lp.dtype).index_add(0, rows, lp)


@register
class Dpo(Objective):
    name = "dpo"
    openai_type = "dpo"
    hyperparameters = {"beta": 0.1}
    precomputes = "reference log-probabilities"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.ref: dict[Any, tuple[float, float]] = {}  # key -> (chosen, rejected) log-probs

    def parts(self, batches: list[list[Item]]) -> list[StepPart]:
        return [StepPart(items, len(items), sum(s.seq.n_tokens + s.rejected.n_tokens
                                                for _, s in items)) for items in batches]

    def loss(self, model, part: StepPart) -> PartLoss:
        loss, right = self._loss(model, part.items)
        n = len(part.items)
        # the pairs' mean times their count: summed over the part, as the trainer expects
        return PartLoss(loss * n, float(loss.detach()) * n, right)

    def evaluate(self, model, items: list[Item]) -> EvalSums:
        loss, right = self._loss(model, items)
        return EvalSums(float(loss) * len(items), right, len(items))

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
    def _pair_logps(self, model, items: list[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.ctx
        samples = [s for _, s in items]
        chosen = sequence_logps(model, make_batch(samples, c.pad_id, c.device), c.full_forward)
        rejected = sequence_logps(model, make_batch(samples, c.pad_id, c.device, rejected=True),
                                  c.full_forward)
        return chosen, rejected

    @torch.no_grad()
    def _reference(self, model, items: list[Item]) -> int:
        """Reference log-probs of the items not computed yet (in eval mode: the reference is
        the base as it serves, without dropout); how many that was."""
        todo = [(k, s) for k, s in items if k not in self.ref]
        if not todo:
            return 0
        was = model.training
        model.eval()
        try:
            with model.disable_adapter():
                c, r = self._pair_logps(model, todo)
        finally:
            model.train(was)
        for (k, _), ci, ri in zip(todo, c.tolist(), r.tolist()):
            self.ref[k] = (ci, ri)
        return len(todo)

    def _loss(self, model, items: list[Item]) -> tuple[torch.Tensor, int]:
        self._reference(model, items)  # computed ahead; here only for pairs it did not meet
        c, r = self._pair_logps(model, items)
        ref = torch.tensor([self.ref[k] for k, _ in items], device=c.device)
        margin = self.ctx.hp.beta * ((c - ref[:, 0]) - (r - ref[:, 1]))
        return -F.logsigmoid(margin).mean(), int((margin > 0).sum())
