"""Hyperparameters with OpenAI's names and ``auto`` semantics, resolved before training starts.

What OpenAI publishes (``/work/shared/FIELD-NOTES.md`` §1.3): the current guide only says the
defaults are picked "based on dataset size"; the cookbook's cost notebook encodes the default
epochs (3 passes, at least 100 and at most 25,000 example-passes, 1..25 epochs); the legacy
``/v1/fine-tunes`` reference gave the batch size as ~0.2% of the training examples capped at 256,
and a learning-rate multiplier of 0.05, 0.1 or 0.2 by the final batch size. So 37 examples train
at batch 1 for 3 epochs, 111 optimiser steps (148 with ``n_epochs=4``).

afinar's rules, applied in this order to the parameters left ``auto`` (explicit values are kept):

1. ``batch_size``: ~0.2% of the examples (OpenAI's legacy rule), the nearest power of two in
   1..256, at most the number of examples. Small sets therefore train one example per step, as
   with OpenAI; a CPU's throughput comes from ``max_tokens_per_forward`` (one padded forward pass
   of up to 1,024 tokens) and from length-grouped batches, not from a batch-size floor. (Before
   this rule afinar used a floor of 8: 37 examples x 4 epochs were 20 steps and ended at training
   loss 0.42 without learning a constant field of the answer.)
2. ``n_epochs``: OpenAI's default-epochs rule. (Rules 1-3 live in ``afinar.data.stats``, so that
   ``afinar data validate`` estimates with the same numbers.)
3. Enough optimiser steps: small datasets need a minimum number of updates (``MIN_STEPS`` = 100,
   about what OpenAI's rules give the smallest files: 10 examples x 10 epochs, 37 x 3), using
   only the parameters left auto. With ``batch_size`` auto it halves until the job takes ``MIN_STEPS`` steps (or
   reaches 1); then, with ``n_epochs`` auto, epochs rise to reach ``MIN_STEPS``, never past
   OpenAI's 25. An explicit ``n_epochs`` and ``batch_size`` are never changed; a job that still
   takes fewer than ``MIN_STEPS`` steps gets a warning event before training.
4. ``learning_rate_multiplier``: scales the method's base learning rate (LoRA 2e-4, full 2e-5,
   ...) by 1, 2 or 4 for batches of up to 16, up to 64, or more: the shape of OpenAI's legacy rule
   (0.05 / 0.1 / 0.2 by batch size, relative to a base afinar does not know), since larger batches
   average out noise and take larger steps.

Token counts do not change these choices; they size forward passes (``max_tokens_per_forward``)
and the training-token estimate of ``afinar data validate``. After training, ``convergence_note``
reads the loss curve and says when a job ended far from converged (a ``warn`` event).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from afinar.data.stats import (  # noqa: F401  (the rules live with the data statistics)
    MIN_STEPS,
    auto_batch_size,
    choose_epochs_and_batch,
    default_epochs,
    steps_per_epoch,
)

Auto = Literal["auto"]
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "sigmoid_norm")  # objectives/dpo.py


class Hyperparameters(BaseModel):
    n_epochs: int | Auto = Field("auto", description="1..50")
    batch_size: int | Auto = Field("auto", description="1..256")
    learning_rate_multiplier: float | Auto = Field("auto", description="> 0")
    max_seq_len: int | None = Field(None, ge=16, description="default: min(context, 2048)")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    gradient_accumulation_steps: int = Field(1, ge=1, le=256)
    weight_decay: float = Field(0.0, ge=0)
    eval_every_steps: int | None = Field(None, ge=1, description="sampled valid metrics")
    eval_sample_size: int = Field(64, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1, description="epochs without a "
                                                "better full valid loss")
    checkpoint_every_steps: int | None = Field(None, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    # read by the preference objectives that declare them (``Objective.hyperparameters``)
    beta: float | Auto = Field("auto", description="DPO, KTO, ORPO, SimPO: (0, 10]")
    loss_type: str = Field("auto", description=f"DPO: {'|'.join(DPO_LOSS_TYPES)}")
    label_smoothing: float | Auto = Field("auto", description="DPO robust: [0, 0.5)")
    gamma: float | Auto = Field("auto", description="SimPO's target margin, >= 0")
    cpo_alpha: float | Auto = Field("auto", description="SimPO: weight of the chosen NLL, >= 0")
    desirable_weight: float | Auto = Field("auto", description="KTO, > 0")
    undesirable_weight: float | Auto = Field("auto", description="KTO, > 0")
    max_tokens_per_forward: int = Field(1024, ge=64, description="padded tokens per forward "
                                        "pass; longer batches run as several (same update)")

    def check_ranges(self) -> None:
        from afinar.errors import InvalidRequest

        if self.n_epochs != "auto" and not 1 <= self.n_epochs <= 50:
            raise InvalidRequest("n_epochs must be 1..50", param="hyperparameters.n_epochs")
        if self.batch_size != "auto" and not 1 <= self.batch_size <= 256:
            raise InvalidRequest("batch_size must be 1..256", param="hyperparameters.batch_size")
        if self.learning_rate_multiplier != "auto" and not self.learning_rate_multiplier > 0:
            raise InvalidRequest("learning_rate_multiplier must be > 0",
                                 param="hyperparameters.learning_rate_multiplier")
        if self.beta != "auto" and not 0 < self.beta <= 10:
            raise InvalidRequest("beta must be in (0, 10]", param="hyperparameters.beta")
        if self.loss_type != "auto" and self.loss_type not in DPO_LOSS_TYPES:
            raise InvalidRequest(f"loss_type must be auto or one of {', '.join(DPO_LOSS_TYPES)}"
                                 f", not {self.loss_type!r}", param="hyperparameters.loss_type")
        for name, lo, hi, what in (("label_smoothing", 0, 0.5, "in [0, 0.5)"),
                                   ("gamma", 0, None, ">= 0"), ("cpo_alpha", 0, None, ">= 0"),
                                   ("desirable_weight", None, None, "> 0"),
                                   ("undesirable_weight", None, None, "> 0")):
            v = getattr(self, name)
            if v == "auto":
                continue
            bad = (not v > 0) if lo is None else (not v >= lo or (hi is not None and v >= hi))
            if bad or not math.isfinite(v):
                raise InvalidRequest(f"{name} must be {what}", param=f"hyperparameters.{name}")


def parse_hyperparameters(values: Mapping[str, Any] | None) -> Hyperparameters:
    """A request's hyperparameters (API, CLI, job record) checked: an unknown name or a bad
    value is one ``InvalidRequest`` naming it (``param`` ``hyperparameters.NAME``)."""
    from pydantic import ValidationError

    from afinar.errors import InvalidRequest

    values = dict(values or {})
    unknown = sorted(set(values) - set(Hyperparameters.model_fields))
    if unknown:
        raise InvalidRequest(f"unknown hyperparameter {unknown[0]!r}",
                             param=f"hyperparameters.{unknown[0]}")
    try:
        hp = Hyperparameters(**values)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"][:1])
        field = Hyperparameters.model_fields.get(key)
        what = "a string" if field and field.annotation is str else "'auto' or a number"
        raise InvalidRequest(f"hyperparameters.{key} must be {what} ({err['msg']})",
                             param=f"hyperparameters.{key}") from None
    hp.check_ranges()
    return hp


class Resolved(BaseModel):
    """The concrete values a job trains with (shown before training, stored on the job)."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float
    max_seq_len: int
    warmup_ratio: float
    scheduler: str
    gradient_accumulation_steps: int
    weight_decay: float
    eval_every_steps: int | None
    eval_sample_size: int
    early_stopping_patience: int | None
    checkpoint_every_steps: int | None
    keep_checkpoints: int
    max_tokens_per_forward: int = 1024
    beta: float | None = None
    loss_type: str | None = None
    label_smoothing: float | None = None
    gamma: float | None = None
    cpo_alpha: float | None = None
    desirable_weight: float | None = None
    undesirable_weight: float | None = None
    steps_per_epoch: int = 0
    total_steps: int = 0


def auto_lr_multiplier(batch_size: int) -> float:
    return 1.0 if batch_size <= 16 else 2.0 if batch_size <= 64 else 4.0


def resolve(hp: Hyperparameters, n_examples: int, base_lr: float, context_length: int,
            objective: Mapping[str, Any] | None = None) -> Resolved:
    """The job's hyperparameters with every ``auto`` decided. ``objective``: the hyperparameters
    the method's objective reads, with their ``auto`` values (DPO's ``{"beta": 0.1}``); the
    others of them stay None."""
    hp.check_ranges()
    own = objective or {}
    ga = hp.gradient_accumulation_steps
    epochs, bs = choose_epochs_and_batch(n_examples, hp.n_epochs, hp.batch_size, ga)
    mult = (auto_lr_multiplier(bs * ga) if hp.learning_rate_multiplier == "auto"
            else float(hp.learning_rate_multiplier))
    steps = steps_per_epoch(n_examples, bs, ga)
    return Resolved(
        n_epochs=epochs, batch_size=bs, learning_rate_multiplier=mult,
        learning_rate=base_lr * mult,
        max_seq_len=hp.max_seq_len or min(context_length, 2048),
        warmup_ratio=hp.warmup_ratio, scheduler=hp.scheduler,
        gradient_accumulation_steps=ga,
        weight_decay=hp.weight_decay, eval_every_steps=hp.eval_every_steps,
        eval_sample_size=hp.eval_sample_size, early_stopping_patience=hp.early_stopping_patience,
        checkpoint_every_steps=hp.checkpoint_every_steps, keep_checkpoints=hp.keep_checkpoints,
        max_tokens_per_forward=hp.max_tokens_per_forward,
        steps_per_epoch=steps, total_steps=steps * epochs,
        **{k: auto if getattr(hp, k) == "auto" else getattr(hp, k) for k, auto in own.items()},
    )


def few_steps_note(r: Resolved) -> str | None:
    """A warning when a job will take fewer than ``MIN_STEPS`` optimiser steps (only possible
    when the user fixed n_epochs or batch_size, or the dataset is tiny)."""
    if r.total_steps >= MIN_STEPS:
        return None
    return (f"Only {r.total_steps} optimiser steps ({r.n_epochs} epochs x {r.steps_per_epoch} "
            f"steps): small datasets usually need {MIN_STEPS} or more to learn a format. Leave "
            "batch_size and n_epochs auto, or lower batch_size / raise n_epochs")


# Loss-curve checks after training (``convergence_note``): the mean training loss of the last
# fifth of the steps against the fifth before it and against the first fifth.
STILL_FALLING, BARELY_MOVED, MIN_CURVE_STEPS = 0.1, 0.8, 5


def convergence_note(losses: list[float]) -> str | None:
    """Why training looks far from converged, or None. Two signs, on the mean training loss of
    fifths of the run: the last fifth still fell by over 10% of the prev fifth and over 10% of
    the whole run's fall (still falling steeply when the schedule ended), or it is over 80% of
    the first fifth's (barely moved)."""
    if len(losses) < MIN_CURVE_STEPS:
        return None
    w = max(1, len(losses) // 5)
    first = sum(losses[:w]) / w
    last = sum(losses[-w:]) / w
    prev = sum(losses[-2 * w:-w]) / w
    hint = "; more epochs (n_epochs) or a higher learning_rate_multiplier may help"
    fell, total = prev - last, first - last
    if fell > STILL_FALLING * prev and total > 0 and fell > STILL_FALLING * total:
        return (f"Training may have ended far from converged: the training loss was still "
                f"falling steeply at the end ({prev:.3f} -> {last:.3f} over the last "
                f"{2 * w} steps){hint}")
    if first > 0 and last > BARELY_MOVED * first:
        return (f"Training may have ended far from converged: the training loss barely moved "
                f"({first:.3f} over the first {w} steps, {last:.3f} over the last {w}){hint}")
    return None
