"""Full fine-tuning: every weight trains; the result is a complete model folder."""

from __future__ import annotations

from afinar.tuning.methods.base import BuildContext, Method, register


@register
class Full(Method):
    name = "full"
    base_lr = 2e-5
    artifact = "full"  # a complete model folder: no base to share, nothing to merge
    shares_base = False
    mergeable = False

    def build(self, model, ctx: BuildContext):
        for p in model.parameters():
            p.requires_grad_(True)
        return model
