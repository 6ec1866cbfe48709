"""What an objective is: how the examples of one optimizer step become a loss to minimise, what
it must compute before training, what validation reports, and how OpenAI's job object names it.

The trainer knows none of this: it hands the objective the step's batches as ``Item`` lists
(``(key, Sample)``, the key naming the example for caches: ``("t", i)`` training, ``("v", i)``
validation), asks for the step's parts (``parts``: one forward/backward pass each), divides each
part's summed loss by the step's ``units`` (trained tokens for SFT, pairs for DPO, so gradient
accumulation means what a larger batch means) and steps the optimizer. Objectives register
themselves in ``OBJECTIVES`` (entry points ``afinar.objectives``); a method names its objective.

The forward helpers here project only the trained positions onto the vocabulary instead of
materialising logits for every position (the memory-lean loss every objective shares).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from afinar.registry import Registry
from afinar.tuning.hparams import Resolved
from afinar.tuning.samples import Sample, collate

Item = tuple[Hashable, Sample]


@dataclass
class ObjectiveContext:
    hp: Resolved
    pad_id: int
    device: str
    full_forward: bool = False  # the method needs the wrapped forward (virtual tokens)
    seed: int = 0  # the job's seed, for objectives that sample (GRPO's rollouts)


@dataclass
class Batch:
    ids: torch.Tensor
    mask: torch.Tensor
    targets: torch.Tensor

    @property
    def n_targets(self) -> int:
        return int((self.targets != -100).sum())


@dataclass
class StepPart:
    """One forward/backward pass of an optimizer step."""

    items: list[Item]
    units: int  # what the step's loss is averaged over (trained tokens, pairs), known up front
    tokens: int  # tokens it trains on (throughput, the job's trained_tokens)
    batch: Batch | None = None  # collated, for objectives that collate ahead


@dataclass
class PartLoss:
    loss: torch.Tensor  # summed over the part's units; the trainer divides by the step's units
    value: float  # the loss as a number, for the metrics
    correct: int  # right predictions (tokens, pairs): the accuracy's numerator over units


@dataclass
class EvalSums:
    loss: float  # summed over units
    correct: int
    units: int
    # further sums over units (GRPO: {"mean_reward": ...}); the trainer reports each divided
    # by ``units`` as ``valid_<key>`` / ``full_valid_<key>``
    extra: dict[str, float] = field(default_factory=dict)


@contextmanager
def as_reference(model) -> Iterator[None]:
    """The reference policy of the preference objectives: the base as it serves (eval mode, no
    dropout) with the adapter off; the model's training mode is restored after."""
    was = model.training
    model.eval()
    try:
        with model.disable_adapter():
            yield
    finally:
        model.train(was)


def make_batch(samples: list[Sample], pad_id: int, device: str, rejected: bool = False) -> Batch:
    seqs = [s.rejected if rejected else s.seq for s in samples]
    ids, mask, tgt = collate(seqs, pad_id)
    return Batch(ids.to(device), mask.to(device), tgt.to(device))


def logits_at_targets(model, b: Batch, full_forward: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the trained positions only, and the mask of those positions."""
    sel = b.targets != -100
    if full_forward:  # PEFT prepends virtual tokens inside its forward
        logits = model(input_ids=b.ids, attention_mask=b.mask, use_cache=False).logits
        return logits[:, -b.ids.shape[1]:][sel], sel
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=b.ids, attention_mask=b.mask,
                                use_cache=False).last_hidden_state
    return base.get_output_embeddings()(hidden[sel]), sel


class Objective:
    """Turns batches into a loss. One instance per training run; it may keep state (DPO's
    reference log-probabilities) that ``state_dict`` saves with every checkpoint."""

    name: ClassVar[str]
    openai_type: ClassVar[str] = "supervised"  # the job object's ``method.type``
    # Resolved hyperparameters it reads, with their ``auto`` values (fields of Hyperparameters)
    hyperparameters: ClassVar[dict[str, Any]] = {}
    precomputes: ClassVar[str] = ""  # what ``precompute`` computes, for the job's events

    def __init__(self, ctx: ObjectiveContext):
        self.ctx = ctx

    def parts(self, batches: list[list[Item]]) -> list[StepPart]:
        """The passes of one optimizer step; ``batches`` are its gradient-accumulation batches."""
        raise NotImplementedError

    def loss(self, model, part: StepPart) -> PartLoss:
        raise NotImplementedError

    def evaluate(self, model, items: list[Item]) -> EvalSums:
        """Summed validation loss and accuracy counts of one batch (under ``torch.no_grad``)."""
        raise NotImplementedError

    def precompute(self, model, parts: Iterable[StepPart],
                   evaluations: Iterable[list[Item]]) -> Iterator[int]:
        """Work to do before the first step, over the first epoch's parts and the validation
        batches in the order training and evaluation first meet them. Yields the number of
        examples done after each piece, so the trainer can honour cancel/pause in between."""
        return iter(())

    def prepare(self, model, parts: list[StepPart]) -> list[StepPart]:
        """Work with the current model on a step's parts before their losses (GRPO: sample
        the completions the loss scores); returns the parts to train on, their ``units`` set.
        Default: the parts as they are."""
        return parts

    def finish_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """The objective's last word on a step's metrics row (add its own fields; a key set
        to None is dropped). Default: the row as it is."""
        return row

    def message(self, row: dict[str, Any], total: int) -> str | None:
        """The metrics event's message for a row; None: the trainer's loss line."""
        return None

    @classmethod
    def openai_method(cls, options: dict[str, Any], hyperparameters: dict[str, Any]
                      ) -> dict[str, Any]:
        """The job object's ``method[openai_type]`` from the job's method options and its
        hyperparameters as echoed."""
        return {"hyperparameters": hyperparameters}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        pass


OBJECTIVES: Registry[type[Objective]] = Registry("objective", "afinar.objectives",
                                                 param="objective")
register = OBJECTIVES.register()  # ``@register`` on a class registers it under its ``name``
