"""The training loop shared by every method; what a method's batches mean (the loss, what to
compute before the first step, validation) is its objective's (``afinar.tuning.objectives``).

Hand-written rather than ``transformers.Trainer``/TRL because the job contract needs things they
do not give together: a data order that is a pure function of (seed, epoch) so a job killed with
SIGKILL resumes to the same final weights; OpenAI's metrics (sampled and full validation loss and
token accuracy per step/epoch); early stopping that promotes the best checkpoint; loss averaged
over trained tokens across gradient-accumulation micro-batches (so accumulation means what a larger
batch means, whatever the objective averages over); and a memory-lean loss that projects only
the trained positions onto the 49k-token vocabulary instead of materialising logits for every
position.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from afinar.tuning.distributed import Collective
from afinar.tuning.hparams import Resolved
from afinar.tuning.methods.base import Method
from afinar.tuning.objectives import Item, ObjectiveContext, StepPart
from afinar.tuning.samples import Sample, epoch_batches

Emit = Callable[[str, str, str, dict | None], None]  # level, type, message, data
Control = Callable[[], str | None]  # returns "cancel" | "pause" | "lost" | None


@dataclass
class TrainState:
    """Everything needed to continue exactly where training stopped."""

    epoch: int = 0
    group: int = 0  # next optimizer step's index within the epoch
    step: int = 0
    trained_tokens: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None  # {"step", "full_valid_loss", "checkpoint" (model id), "path"}
    bad_epochs: int = 0
    finished: bool = False
    stop_reason: str | None = None


class Trainer:
    def __init__(self, model, method: Method, tok, train: list[Sample], val: list[Sample] | None,
                 hp: Resolved, seed: int, device: str, emit: Emit, control: Control,
                 save_checkpoint: Callable[[TrainState, dict], str],
                 dist: Collective | None = None):
        """``dist``: the ranks of a multi-process run (``tuning/distributed.py``); each takes its
        share of every batch and the gradients are summed, so the step is one process's."""
        self.dist = dist or Collective()
        self.model, self.method, self.tok = model, method, tok
        self.train, self.val = train, val or []
        self.hp, self.seed, self.device = hp, seed, device
        self.emit, self.control, self.save_checkpoint = emit, control, save_checkpoint
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.objective = method.make_objective(ObjectiveContext(
            hp, self.pad_id, device, full_forward=method.full_forward, seed=seed))
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        warm = int(hp.warmup_ratio * hp.total_steps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _lr_factor(
            s, warm, hp.total_steps, hp.scheduler))
        self._last_end: float | None = None  # when the previous optimizer step ended
        rnd = random.Random(f"afinar-eval:{seed}")
        self.eval_sample = sorted(rnd.sample(range(len(self.val)),
                                             min(hp.eval_sample_size, len(self.val))))

    # -- state for checkpoints --------------------------------------------------------------
    def state_dict(self, st: TrainState) -> dict[str, Any]:
        trainable = {n: p.detach().clone() for n, p in self.model.named_parameters()
                     if p.requires_grad}
        return {"train": st.__dict__.copy(), "params": trainable, "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "rng": torch.get_rng_state(),
                "objective": self.objective.state_dict()}

    def load_state_dict(self, sd: dict[str, Any]) -> TrainState:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, v in sd["params"].items():
                params[n].copy_(v)
        self.opt.load_state_dict(sd["opt"])
        self.sched.load_state_dict(sd["sched"])
        torch.set_rng_state(sd["rng"])
        # states saved before objectives had their own key held DPO's "ref" at the top level
        self.objective.load_state_dict(sd.get("objective", sd))
        return TrainState(**sd["train"])

    # -- evaluation ----------------------------------------------------------------------
    def _items(self, which: str, idx: list[int]) -> list[Item]:
        data = self.train if which == "t" else self.val
        return [((which, i), data[i]) for i in idx]

    def _eval_batches(self, idx: list[int]) -> Iterator[list[Item]]:
        order = sorted(idx, key=lambda i: self.val[i].length)
        bs = max(1, self.hp.batch_size)
        for k in self.dist.shard(range(0, len(order), bs)):  # every N-th batch on rank r
            yield self._items("v", order[k:k + bs])

    @torch.no_grad()
    def evaluate(self, idx: list[int]) -> dict[str, float]:
        was = self.model.training
        self.model.eval()
        total, right, n = 0.0, 0, 0
        extra: dict[str, float] = {}
        for items in self._eval_batches(idx):
            sums = self.objective.evaluate(self.model, items)
            total += sums.loss
            right += sums.correct
            n += sums.units
            for k, v in sums.extra.items():
                extra[k] = extra.get(k, 0.0) + v
        self.model.train(was)
        if self.dist.world > 1:  # the sums of every rank's share
            keys = self.dist.agree(sorted(extra))
            total, right, n, *vals = self.dist.sum([total, right, n,
                                                    *(extra.get(k, 0.0) for k in keys)])
            right, n, extra = int(right), int(n), dict(zip(keys, vals))
        return {"loss": total / max(n, 1), "accuracy": right / max(n, 1),
                "extra": {k: v / max(n, 1) for k, v in extra.items()}}

    # -- before the first step ------------------------------------------------------------
    def _groups(self, epoch: int) -> list[list[list[int]]]:
        """The epoch's optimizer steps, each a list of gradient-accumulation batches."""
        batches = epoch_batches([s.length for s in self.train], self.hp.batch_size, self.seed,
                                epoch)
        ga = self.hp.gradient_accumulation_steps
        groups = [batches[i:i + ga] for i in range(0, len(batches), ga)]
        return [g for g in groups for _ in range(self.method.updates_per_batch)]

    def _parts(self, group: list[list[int]]) -> list[StepPart]:
        mine = [self.dist.shard(b) for b in group]  # one process: the whole batch
        return self.objective.parts([self._items("t", b) for b in mine if b])

    def _first_meetings(self, groups: list) -> Iterator[list[Item]]:
        """Validation batches in the order the evaluations first meet them: the sampled
        evaluation when it runs within the first epoch, then the full one."""
        every = self.hp.eval_every_steps
        if not self.val:
            return
        if every and every <= len(groups):
            yield from self._eval_batches(self.eval_sample)
        yield from self._eval_batches(list(range(len(self.val))))

    def _precompute(self, st: TrainState) -> str | None:
        """The objective's work before the first step (none for most); a control signal that
        came in meanwhile."""
        groups = self._groups(st.epoch)
        parts = (p for g in groups[st.group:] for p in self._parts(g))
        t0, done = time.perf_counter(), 0
        for n in self.objective.precompute(self.model, parts, self._first_meetings(groups)):
            done += n
            # ranks do different amounts of it: they agree on a signal once, after
            if self.dist.world == 1 and (signal := self.control()):
                return signal
        if self.dist.world > 1:
            done = int(self.dist.sum([done])[0])
            if signal := self.dist.agree(self.control()):
                return signal
        if done:
            self.emit("info", "message", f"Computed the {self.objective.precomputes} of {done} "
                      f"examples in {time.perf_counter() - t0:.1f} s", None)
        return None

    # -- the loop -------------------------------------------------------------------------
    def run(self, st: TrainState) -> TrainState:
        hp, model = self.hp, self.model
        st.stop_reason = None  # a state saved at a pause carries the old reason
        model.train()
        if not st.finished and st.epoch < hp.n_epochs and (signal := self._precompute(st)):
            st.stop_reason = signal
            return st
        while st.epoch < hp.n_epochs and not st.finished:
            groups = self._groups(st.epoch)
            if not groups:
                break
            while st.group < len(groups):
                signal = self.dist.agree(self.control())
                if signal:
                    st.stop_reason = signal
                    return st
                t0 = time.perf_counter()
                last = self._last_end or t0
                loss_sum, right, n_t, n_tok = self._step(groups[st.group])
                st.group += 1
                st.step += 1
                st.trained_tokens += n_tok
                row = {"step": st.step, "epoch": st.epoch + 1, "train_loss": loss_sum,
                       "train_mean_token_accuracy": right / max(n_t, 1),
                       "tokens": n_tok,
                       "tokens_per_second": n_tok / max(time.perf_counter() - t0, 1e-9),
                       "step_seconds": time.perf_counter() - last,
                       "learning_rate": self.sched.get_last_lr()[0], "total_steps": hp.total_steps}
                if self.val and hp.eval_every_steps and st.step % hp.eval_every_steps == 0:
                    ev = self.evaluate(self.eval_sample)
                    row.update(valid_loss=ev["loss"], valid_mean_token_accuracy=ev["accuracy"],
                               **{f"valid_{k}": v for k, v in ev["extra"].items()})
                end_of_epoch = st.group == len(groups)
                if end_of_epoch and self.val:
                    ev = self.evaluate(list(range(len(self.val))))
                    row.update(full_valid_loss=ev["loss"],
                               full_valid_mean_token_accuracy=ev["accuracy"],
                               **{f"full_valid_{k}": v for k, v in ev["extra"].items()})
                    if "valid_loss" not in row:
                        row.update(valid_loss=ev["loss"], valid_mean_token_accuracy=ev["accuracy"],
                                   **{f"valid_{k}": v for k, v in ev["extra"].items()})
                row = {k: v for k, v in self.objective.finish_row(row).items() if v is not None}
                st.history.append(row)
                self.emit("info", "metrics", self.objective.message(row, hp.total_steps)
                          or _metrics_message(row, hp.total_steps), row)
                self._last_end = time.perf_counter()
                if end_of_epoch:
                    st.epoch += 1
                    st.group = 0
                    self._end_of_epoch(st, row)
                    break
                elif hp.checkpoint_every_steps and st.step % hp.checkpoint_every_steps == 0:
                    self.save_checkpoint(st, row)
        st.finished = True
        return st

    def _end_of_epoch(self, st: TrainState, row: dict) -> None:
        improved = False
        if "full_valid_loss" in row:
            if st.best is None or row["full_valid_loss"] < st.best["full_valid_loss"] - 1e-6:
                improved, st.bad_epochs = True, 0
            else:
                st.bad_epochs += 1
        if improved:
            # recorded before the checkpoint is written, so the state saved with it (what a
            # killed job resumes from) already knows it is the best; ``save_checkpoint`` fills
            # in where the checkpoint lives
            st.best = {"step": st.step, "full_valid_loss": row["full_valid_loss"],
                       "checkpoint": None, "path": None}
        self.save_checkpoint(st, row)
        p = self.hp.early_stopping_patience
        if p and st.bad_epochs >= p and st.epoch < self.hp.n_epochs:
            st.finished = True
            st.stop_reason = "early_stopping"
            self.emit("info", "message", f"Early stopping after epoch {st.epoch}: full validation "
                      f"loss did not improve for {p} epoch(s); best was step {st.best['step']} "
                      f"({st.best['full_valid_loss']:.4f})", None)

    def _step(self, group: list[list[int]]) -> tuple[float, int, int, int]:
        parts = self.objective.prepare(self.model, self._parts(group))
        units = sum(p.units for p in parts)  # normalise over the whole accumulated batch
        if self.dist.world > 1:  # ... of every rank
            units = int(self.dist.sum([units])[0])
        loss_sum, right = 0.0, 0
        for part in parts:
            out = self.objective.loss(self.model, part)
            (out.loss / units).backward()
            loss_sum += out.value / units
            right += out.correct
        tokens = sum(p.tokens for p in parts)
        if self.dist.world > 1:
            loss_sum, right, tokens = self.dist.sum([loss_sum, right, tokens])
            right, tokens = int(right), int(tokens)
        self._optimizer_step()
        return loss_sum, right, units, tokens

    def _optimizer_step(self) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.dist.sum_grads(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)


def _lr_factor(step: int, warmup: int, total: int, kind: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant" or total <= warmup:
        return 1.0
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - frac if kind == "linear" else 0.5 * (1 + math.cos(math.pi * frac))


def _metrics_message(row: dict, total: int) -> str:
    msg = f"Step {row['step']}/{total}: training loss={row['train_loss']:.4f}"
    if "valid_loss" in row:
        msg += f", validation loss={row['valid_loss']:.4f}"
    if "full_valid_loss" in row:
        msg += f", full validation loss={row['full_valid_loss']:.4f}"
    return msg

