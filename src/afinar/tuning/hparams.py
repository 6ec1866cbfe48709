"""Hyperparameters with OpenAI's names and ``auto`` semantics, resolved before training starts.

- ``n_epochs`` auto: OpenAI's rule (3 passes, at least 100 and at most 25,000 example-passes,
  1..25 epochs; see ``afinar.data.stats.default_epochs``).
- ``batch_size`` auto: OpenAI's legacy rule, ~0.2% of the training examples capped at 256, rounded
  to a power of two, and at least 8 here because a CPU only reaches its throughput with a few
  sequences per step.
- ``learning_rate_multiplier`` auto: scales the method's base learning rate (LoRA 2e-4, full 2e-5,
  …) by 1, 2 or 4 for batches of up to 16, 64 or more, the shape of OpenAI's legacy rule (0.05 /
  0.1 / 0.2 by batch size): larger batches average out noise and take larger steps.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field

from afinar.data.stats import default_epochs

Auto = Literal["auto"]


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
    beta: float | Auto = Field("auto", description="DPO only, (0, 2]")
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
        if self.beta != "auto" and not 0 < self.beta <= 2:
            raise InvalidRequest("beta must be in (0, 2]", param="hyperparameters.beta")


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
    steps_per_epoch: int = 0
    total_steps: int = 0


def auto_batch_size(n_examples: int) -> int:
    raw = max(1, round(0.002 * n_examples))
    return int(min(256, max(8, 2 ** math.ceil(math.log2(raw)))))


def auto_lr_multiplier(batch_size: int) -> float:
    return 1.0 if batch_size <= 16 else 2.0 if batch_size <= 64 else 4.0


def resolve(hp: Hyperparameters, n_examples: int, base_lr: float, context_length: int,
            is_dpo: bool = False) -> Resolved:
    hp.check_ranges()
    epochs = default_epochs(n_examples) if hp.n_epochs == "auto" else hp.n_epochs
    bs = auto_batch_size(n_examples) if hp.batch_size == "auto" else hp.batch_size
    bs = min(bs, max(1, n_examples))
    mult = (auto_lr_multiplier(bs) if hp.learning_rate_multiplier == "auto"
            else float(hp.learning_rate_multiplier))
    steps = math.ceil(math.ceil(n_examples / bs) / hp.gradient_accumulation_steps)
    return Resolved(
        n_epochs=epochs, batch_size=bs, learning_rate_multiplier=mult,
        learning_rate=base_lr * mult,
        max_seq_len=hp.max_seq_len or min(context_length, 2048),
        warmup_ratio=hp.warmup_ratio, scheduler=hp.scheduler,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        weight_decay=hp.weight_decay, eval_every_steps=hp.eval_every_steps,
        eval_sample_size=hp.eval_sample_size, early_stopping_patience=hp.early_stopping_patience,
        checkpoint_every_steps=hp.checkpoint_every_steps, keep_checkpoints=hp.keep_checkpoints,
        max_tokens_per_forward=hp.max_tokens_per_forward,
        beta=(0.1 if hp.beta == "auto" else hp.beta) if is_dpo else None,
        steps_per_epoch=steps, total_steps=steps * epochs,
    )
