"""The training loop shared by every method.

Hand-written rather than ``transformers.Trainer``/TRL because the job contract needs things they
do not give together: a data order that is a pure function of (seed, epoch) so a job killed with
SIGKILL resumes to the same final weights; OpenAI's metrics (sampled and full validation loss and
token accuracy per step/epoch); early stopping that promotes the best checkpoint; loss averaged
over trained tokens across gradient-accumulation micro-batches (so accumulation means what a larger
batch means); and a memory-lean loss that projects only the trained positions onto the 49k-token
vocabulary instead of materialising logits for every position.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from afinar.tuning.hparams import Resolved
from afinar.tuning.methods.base import Method
from afinar.tuning.samples import Sample, collate, epoch_batches

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


@dataclass
class Batch:
    ids: torch.Tensor
    mask: torch.Tensor
    targets: torch.Tensor

    @property
    def n_targets(self) -> int:
        return int((self.targets != -100).sum())


def _batch(samples: list[Sample], pad_id: int, device: str, rejected: bool = False) -> Batch:
    seqs = [s.rejected if rejected else s.seq for s in samples]
    ids, mask, tgt = collate(seqs, pad_id)
    return Batch(ids.to(device), mask.to(device), tgt.to(device))


def _logits_at_targets(model, method: Method, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    sel = b.targets != -100
    if method.full_forward:  # PEFT prepends virtual tokens inside its forward
        logits = model(input_ids=b.ids, attention_mask=b.mask, use_cache=False).logits
        return logits[:, -b.ids.shape[1]:][sel], sel
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=b.ids, attention_mask=b.mask,
                                use_cache=False).last_hidden_state
    return base.get_output_embeddings()(hidden[sel]), sel


def token_loss(model, method: Method, b: Batch) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over trained positions, and how many predictions were right."""
    logits, sel = _logits_at_targets(model, method, b)
    t = b.targets[sel]
    loss = F.cross_entropy(logits.float(), t, reduction="sum")
    return loss, int((logits.argmax(-1) == t).sum())


def sequence_logps(model, method: Method, b: Batch) -> torch.Tensor:
    """Per-sequence sum of log p(trained tokens): what DPO compares."""
    logits, sel = _logits_at_targets(model, method, b)
    lp = logits.float().log_softmax(-1).gather(1, b.targets[sel][:, None]).squeeze(1)
    rows = sel.nonzero()[:, 0]
    return torch.zeros(b.ids.shape[0], device=lp.device, dtype=lp.dtype).index_add(0, rows, lp)


class Trainer:
    def __init__(self, model, method: Method, tok, train: list[Sample], val: list[Sample] | None,
                 hp: Resolved, seed: int, device: str, emit: Emit, control: Control,
                 save_checkpoint: Callable[[TrainState, dict], str]):
        self.model, self.method, self.tok = model, method, tok
        self.train, self.val = train, val or []
        self.hp, self.seed, self.device = hp, seed, device
        self.emit, self.control, self.save_checkpoint = emit, control, save_checkpoint
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.dpo = method.data_kind == "preference"
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        warm = int(hp.warmup_ratio * hp.total_steps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _lr_factor(
            s, warm, hp.total_steps, hp.scheduler))
        self.ref: dict[int, tuple[float, float]] = {}
        self._last_end: float | None = None  # when the previous optimizer step ended
        rnd = random.Random(f"afinar-eval:{seed}")
        self.eval_sample = sorted(rnd.sample(range(len(self.val)),
                                             min(hp.eval_sample_size, len(self.val))))

    # -- state for checkpoints --------------------------------------------------------------
    def state_dict(self, st: TrainState) -> dict[str, Any]:
        trainable = {n: p.detach().clone() for n, p in self.model.named_parameters()
                     if p.requires_grad}
        return {"train": st.__dict__.copy(), "params": trainable, "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "rng": torch.get_rng_state(), "ref": self.ref}

    def load_state_dict(self, sd: dict[str, Any]) -> TrainState:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, v in sd["params"].items():
                params[n].copy_(v)
        self.opt.load_state_dict(sd["opt"])
        self.sched.load_state_dict(sd["sched"])
        torch.set_rng_state(sd["rng"])
        self.ref = sd.get("ref") or {}
        return TrainState(**sd["train"])

    # -- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, idx: list[int]) -> dict[str, float]:
        was = self.model.training
        self.model.eval()
        total, right, n = 0.0, 0, 0
        order = sorted(idx, key=lambda i: self.val[i].length)
        bs = max(1, self.hp.batch_size)
        for k in range(0, len(order), bs):
            samples = [self.val[i] for i in order[k:k + bs]]
            if self.dpo:
                loss, acc = self._dpo_loss(samples, [("v", i) for i in order[k:k + bs]])
                total += float(loss) * len(samples)
                right += acc
                n += len(samples)
            else:
                b = _batch(samples, self.pad_id, self.device)
                loss, ok = token_loss(self.model, self.method, b)
                total += float(loss)
                right += ok
                n += b.n_targets
        self.model.train(was)
        return {"loss": total / max(n, 1), "accuracy": right / max(n, 1)}

    # -- DPO ------------------------------------------------------------------------------
    def _pair_logps(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        c = sequence_logps(self.model, self.method, _batch(samples, self.pad_id, self.device))
        r = sequence_logps(self.model, self.method,
                           _batch(samples, self.pad_id, self.device, rejected=True))
        return c, r

    @torch.no_grad()
    def _reference(self, keys: list, samples: list[Sample]) -> None:
        todo = [(k, s) for k, s in zip(keys, samples) if k not in self.ref]
        if not todo:
            return
        with self.model.disable_adapter():
            c, r = self._pair_logps([s for _, s in todo])
        for (k, _), ci, ri in zip(todo, c.tolist(), r.tolist()):
            self.ref[k] = (ci, ri)

    def _dpo_loss(self, samples: list[Sample], keys: list) -> tuple[torch.Tensor, int]:
        self._reference(keys, samples)
        c, r = self._pair_logps(samples)
        ref = torch.tensor([self.ref[k] for k in keys], device=c.device)
        margin = self.hp.beta * ((c - ref[:, 0]) - (r - ref[:, 1]))
        return -F.logsigmoid(margin).mean(), int((margin > 0).sum())

    # -- the loop -------------------------------------------------------------------------
    def run(self, st: TrainState) -> TrainState:
        hp, model = self.hp, self.model
        st.stop_reason = None  # a state saved at a pause carries the old reason
        lengths = [s.length for s in self.train]
        model.train()
        while st.epoch < hp.n_epochs and not st.finished:
            batches = epoch_batches(lengths, hp.batch_size, self.seed, st.epoch)
            ga = hp.gradient_accumulation_steps
            groups = [batches[i:i + ga] for i in range(0, len(batches), ga)]
            if not groups:
                break
            while st.group < len(groups):
                signal = self.control()
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
                    row.update(valid_loss=ev["loss"], valid_mean_token_accuracy=ev["accuracy"])
                end_of_epoch = st.group == len(groups)
                if end_of_epoch and self.val:
                    ev = self.evaluate(list(range(len(self.val))))
                    row.update(full_valid_loss=ev["loss"],
                               full_valid_mean_token_accuracy=ev["accuracy"])
                    if "valid_loss" not in row:
                        row.update(valid_loss=ev["loss"], valid_mean_token_accuracy=ev["accuracy"])
                st.history.append(row)
                self.emit("info", "metrics", _metrics_message(row, hp.total_steps), row)
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
        samples = [[self.train[i] for i in b] for b in group]
        if self.dpo:
            n_pairs = sum(len(s) for s in samples)
            loss_sum, right = 0.0, 0
            for b, ss in zip(group, samples):
                loss, acc = self._dpo_loss(ss, [("t", i) for i in b])
                (loss * len(ss) / n_pairs).backward()
                loss_sum += float(loss.detach()) * len(ss) / n_pairs
                right += acc
            n_tok = sum(s.seq.n_tokens + s.rejected.n_tokens for ss in samples for s in ss)
            self._optimizer_step()
            return loss_sum, right, n_pairs, n_tok
        # Bound the padded tokens of one forward pass: activations dominate memory, and a CPU
        # loses nothing by running a long batch as a few smaller passes. The loss is normalised
        # over the whole step's trained tokens, so the update is the same.
        batches = [_batch(part, self.pad_id, self.device) for ss in samples
                   for part in _split_by_tokens(ss, self.hp.max_tokens_per_forward)]
        n_t = sum(b.n_targets for b in batches)  # normalise over the whole accumulated batch
        loss_sum, right = 0.0, 0
        for b in batches:
            loss, ok = token_loss(self.model, self.method, b)
            (loss / n_t).backward()
            loss_sum += float(loss.detach()) / n_t
            right += ok
        self._optimizer_step()
        return loss_sum, right, n_t, sum(int(b.mask.sum()) for b in batches)

    def _optimizer_step(self) -> None:
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                       1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)


def _split_by_tokens(samples: list[Sample], budget: int) -> list[list[Sample]]:
    """Consecutive parts whose padded size (count x longest) stays within ``budget``."""
    parts: list[list[Sample]] = [[]]
    for smp in samples:
        part = parts[-1]
        width = max([x.seq.n_tokens for x in part] + [smp.seq.n_tokens])
        if part and width * (len(part) + 1) > budget:
            parts.append([smp])
        else:
            part.append(smp)
    return parts


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

