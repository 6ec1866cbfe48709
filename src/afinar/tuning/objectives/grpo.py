"""GRPO (Shao et al. 2024, DeepSeekMath), as TRL's ``GRPOTrainer`` computes it: for each prompt
of a step, ``num_generations`` completions sampled from the current policy, scored by a reward
(a grader), advantages relative to the group, and a clipped ratio loss over the completion
tokens, optionally with a KL penalty to the reference (the base with the adapter off).

- Advantages: A = (r - mean of the prompt's group) / (std + 1e-4), the std taken per group
  (``scale_rewards="group"``), over the step's whole batch (``"batch"``) or not at all
  (``"none"``, Dr. GRPO); torch's unbiased std, as TRL. A completion the reward could not score
  (a grader error) gets A = 0 and is left out of its group's mean and std.
- Token loss: -min(rho A, clip(rho, 1 - epsilon, 1 + epsilon_high) A) + beta k3, with
  rho = exp(logp - logp_old) and k3 = exp(ref - logp) - (ref - logp) - 1.
- Aggregation (``loss_type``): ``dapo`` (default) sums over tokens and divides by the step's
  completion tokens; ``grpo`` averages each sequence's tokens, then the sequences; ``dr_grpo``
  sums and divides by (sequences x ``max_completion_length``). All three are what the trainer's
  "summed loss / the step's units" already means, with units = tokens, sequences, or sequences
  x max length.
- ``num_iterations`` > 1: the method trains each batch that many optimizer steps in a row
  (``Method.updates_per_batch``); the rollouts of the first are reused, with logp_old the
  policy's log-probabilities when they were sampled. With 1, logp_old is logp detached (rho = 1).

Sampling (``prepare``, before the step's losses): one batched ``model.generate`` over the
step's prompts with ``num_return_sequences`` = the group size, the adapter active, in eval mode
under ``torch.no_grad``, from a fresh ``GenerationConfig`` (temperature, top_p 1, top_k off,
stop at the template's end-of-turn tokens) so the model folder's sampling defaults never change
the policy being sampled. The global RNG is forked and seeded from (job seed, rollout number),
so a job resumed from a checkpoint samples the same completions; the rollout number and the
current rollouts are part of the training state. Validation answers each validation prompt
greedily (the same text every time) and reports the mean reward; its loss is the negative mean
reward, so the trainer's "lowest full validation loss" checkpoint is the best mean reward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from afinar.data.encode import Encoded
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
from afinar.tuning.objectives.sft import split_by_tokens
from afinar.tuning.samples import Sample

# texts and the rows' items -> (score, errored) per text
Reward = Callable[[list[str], list[dict]], list[tuple[float, bool]]]
STD_EPS = 1e-4
LOSS_TYPES = ("dapo", "grpo", "dr_grpo")
SCALES = ("group", "batch", "none")


@dataclass
class GrpoSettings:
    num_generations: int = 4
    scale_rewards: str = "group"
    epsilon: float = 0.2
    epsilon_high: float | None = None  # None: epsilon
    num_iterations: int = 1
    loss_type: str = "dapo"
    temperature: float = 1.0
    max_completion_length: int = 64


# -- the formulas, on plain tensors ----------------------------------------------------------
def group_advantages(rewards: torch.Tensor, k: int, scale: str = "group",
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """Advantages of ``rewards`` (n_prompts * k, each prompt's k in a row); ``valid`` False
    marks unscorable ones (A = 0, not in the statistics)."""
    r = rewards.float()
    valid = torch.ones_like(r, dtype=torch.bool) if valid is None else valid
    g, vg = r.view(-1, k), valid.view(-1, k)
    n = vg.sum(1, keepdim=True).clamp(min=1)
    mean = torch.where(vg, g, 0).sum(1, keepdim=True) / n
    adv = g - mean
    if scale == "group":
        var = torch.where(vg, adv, 0).pow(2).sum(1, keepdim=True) / (n - 1).clamp(min=1)
        adv = adv / (var.sqrt() + STD_EPS)
    elif scale == "batch":
        rv = r[valid]
        std = rv.std() if rv.numel() > 1 else torch.tensor(0.0)
        adv = adv / (std + STD_EPS)
    return torch.where(vg, adv, 0).reshape(-1)


def kl_k3(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The per-token KL estimate exp(ref - logp) - (ref - logp) - 1 (Schulman's k3)."""
    d = ref - logp
    return torch.exp(d) - d - 1


def token_losses(logp: torch.Tensor, old: torch.Tensor, adv: torch.Tensor, epsilon: float,
                 epsilon_high: float, beta: float = 0.0, ref: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate (+ beta k3) and the mask of tokens in a clipped region
    (ratio below 1 - epsilon with A < 0, or above 1 + epsilon_high with A > 0, as TRL counts)."""
    ratio = torch.exp(logp - old)
    loss = -torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high) * adv)
    if beta and ref is not None:
        loss = loss + beta * kl_k3(logp, ref)
    clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))
    return loss, clipped


def aggregate(loss: torch.Tensor, seq_of_token: torch.Tensor, lengths: torch.Tensor,
              loss_type: str, max_completion_length: int) -> tuple[torch.Tensor, float]:
    """(summed loss of these tokens, units the step divides by) so that the step's sum over
    parts divided by the step's units is the ``loss_type``'s aggregate."""
    if loss_type == "grpo":  # each sequence's token mean, summed; divided by the sequences
        return (loss / lengths[seq_of_token]).sum(), float(len(lengths))
    if loss_type == "dr_grpo":
        return loss.sum(), float(len(lengths) * max_completion_length)
    return loss.sum(), float(loss.numel())  # dapo: over the step's completion tokens


def token_logps(model, b: Batch, full_forward: bool = False) -> tuple[torch.Tensor,
                                                                      torch.Tensor]:
    """log p of every trained (completion) token, row by row, and each token's row."""
    logits, sel = logits_at_targets(model, b, full_forward)
    lp = logits.float().log_softmax(-1).gather(1, b.targets[sel][:, None]).squeeze(1)
    return lp, sel.nonzero()[:, 0]


@dataclass
class RolloutPart(StepPart):
    adv: torch.Tensor | None = None  # per token
    old: torch.Tensor | None = None  # per token; None: logp detached
    ref: torch.Tensor | None = None  # per token; None when beta = 0
    lengths: torch.Tensor | None = None  # per sequence


@register
class Grpo(Objective):
    name = "grpo"
    openai_type = "reinforcement"
    hyperparameters = {"beta": 0.0}  # TRL's default: no KL term, no reference pass

    def __init__(self, ctx, settings: GrpoSettings | None = None, reward: Reward | None = None,
                 tokenizer=None):
        super().__init__(ctx)
        self.s = settings or GrpoSettings()
        self.reward = reward
        self.tokenizer = tokenizer
        if tokenizer is not None:
            from afinar.models.templates import end_of_turn_ids

            self.eot_ids = end_of_turn_ids(tokenizer)
        else:
            self.eot_ids = [ctx.pad_id]
        self.rollout: dict[str, Any] | None = None  # the rollouts being trained on
        self.rollouts = 0  # how many were sampled (seeds the next)
        self._acc: dict[str, float] = {}

    @property
    def beta(self) -> float:
        return float(self.ctx.hp.beta or 0.0)

    # -- the trainer's interface --------------------------------------------------------------
    def parts(self, batches: list[list[Item]]) -> list[StepPart]:
        return [StepPart(items, len(items), sum(s.seq.n_tokens for _, s in items))
                for items in batches]

    def prepare(self, model, parts: list[StepPart]) -> list[StepPart]:
        items = [it for p in parts for it in p.items]
        keys = [k for k, _ in items]
        r = self.rollout
        if r is None or r["keys"] != keys or r["used"] >= self.s.num_iterations:
            self.rollout = r = self._sample(model, items)
        r["used"] += 1
        self._acc = {"clipped": 0.0, "kl": 0.0, "tokens": 0.0}
        return self._parts(r)

    def loss(self, model, part: StepPart) -> PartLoss:
        assert isinstance(part, RolloutPart)
        c, s = self.ctx, self.s
        logp, rows = token_logps(model, part.batch, c.full_forward)
        old = part.old if part.old is not None else logp.detach()
        tl, clipped = token_losses(logp, old, part.adv, s.epsilon, self._eps_high, self.beta,
                                   part.ref)
        loss, _ = aggregate(tl, rows, part.lengths, s.loss_type, s.max_completion_length)
        self._acc["clipped"] += float(clipped.sum())
        self._acc["tokens"] += logp.numel()
        if self.beta and part.ref is not None:
            self._acc["kl"] += float(kl_k3(logp.detach(), part.ref).sum())
        return PartLoss(loss, float(loss.detach()), 0)

    def evaluate(self, model, items: list[Item]) -> EvalSums:
        seqs, texts = self._generate(model, items, 1, greedy=True)
        scores = self._score(texts, [s.item or {} for _, s in items])
        total = sum(x for x, _ in scores)
        return EvalSums(-total, 0, len(items), {"mean_reward": total,
                                                "mean_parse_error": sum(e for _, e in scores)})

    def finish_row(self, row: dict[str, Any]) -> dict[str, Any]:
        st = (self.rollout or {}).get("stats", {})
        a = self._acc
        row.update(train_mean_reward=st.get("reward_mean"), train_reward_std=st.get("reward_std"),
                   train_mean_parse_error=st.get("parse_error"),
                   frac_reward_zero_std=st.get("frac_zero_std"),
                   completion_tokens_mean=st.get("length_mean"),
                   clip_ratio=a["clipped"] / max(a["tokens"], 1),
                   train_mean_token_accuracy=None, valid_mean_token_accuracy=None,
                   full_valid_mean_token_accuracy=None)
        if self.beta:
            row["kl"] = a["kl"] / max(a["tokens"], 1)
        return row

    def message(self, row: dict[str, Any], total: int) -> str | None:
        msg = f"Step {row['step']}/{total} , train mean reward={row['train_mean_reward']:.2f}"
        for key, what in (("valid_mean_reward", "validation mean reward"),
                          ("full_valid_mean_reward", "full validation mean reward"),
                          ("full_valid_mean_parse_error", "full validation mean parse error")):
            if key in row:
                msg += f", {what}={row[key]:.2f}"
        return msg

    @classmethod
    def openai_method(cls, options: dict[str, Any], hyperparameters: dict[str, Any]
                      ) -> dict[str, Any]:
        hyper = {**hyperparameters, **{k: options.get(k, "auto") for k in (
            "compute_multiplier", "eval_interval", "eval_samples", "reasoning_effort")}}
        return {"grader": options.get("grader"), "response_format": options.get(
            "response_format"), "hyperparameters": hyper}

    def state_dict(self) -> dict[str, Any]:
        return {"rollout": self.rollout, "rollouts": self.rollouts}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.rollout = sd.get("rollout")
        self.rollouts = int(sd.get("rollouts", 0))

    # -- the pieces ---------------------------------------------------------------------------
    @property
    def _eps_high(self) -> float:
        return self.s.epsilon if self.s.epsilon_high is None else self.s.epsilon_high

    def _score(self, texts: list[str], items: list[dict]) -> list[tuple[float, bool]]:
        if self.reward is None:
            raise RuntimeError("GRPO needs a reward (its method builds one from the grader)")
        return [(float(x), bool(e)) for x, e in self.reward(texts, items)]

    def _room(self, items: list[Item]) -> int:
        longest = max(s.seq.n_tokens for _, s in items)
        return max(1, min(self.s.max_completion_length, self.ctx.hp.max_seq_len - longest))

    @torch.no_grad()
    def _generate(self, model, items: list[Item], k: int, greedy: bool = False
                  ) -> tuple[list[list[int]], list[str]]:
        """k completions per prompt (prompt i's at i*k .. i*k+k-1): token ids through the first
        end-of-turn token, and their text."""
        from transformers import GenerationConfig

        c = self.ctx
        prompts = [s.seq.input_ids for _, s in items]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), c.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left-padded: every prompt ends where generation starts
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        gc = GenerationConfig(max_new_tokens=self._room(items), num_return_sequences=k,
                              eos_token_id=self.eot_ids, pad_token_id=c.pad_id,
                              do_sample=not greedy, temperature=None if greedy else
                              self.s.temperature, top_p=None if greedy else 1.0,
                              top_k=None if greedy else 0)
        was = model.training
        model.eval()
        try:
            out = model.generate(input_ids=ids.to(c.device), attention_mask=mask.to(c.device),
                                 generation_config=gc)
        finally:
            model.train(was)
        eot = set(self.eot_ids)
        seqs = []
        for row in out[:, width:].tolist():
            end = next((j for j, t in enumerate(row) if t in eot), None)
            seqs.append(row if end is None else row[:end + 1])
        tok = self.tokenizer
        texts = [tok.decode([t for t in s if t not in eot], skip_special_tokens=True)
                 if tok is not None else " ".join(map(str, s)) for s in seqs]
        return seqs, texts

    def _sample(self, model, items: list[Item]) -> dict[str, Any]:
        """Sample, score and turn into training sequences one step's rollouts."""
        c, s, k = self.ctx, self.s, self.s.num_generations
        devices = [torch.device(c.device).index or 0] if c.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((c.seed * 1_000_003 + self.rollouts) % 2**63)
            comps, texts = self._generate(model, items, k)
        self.rollouts += 1
        its = [s_.item or {} for _, s_ in items for _ in range(k)]
        scores = self._score(texts, its)
        rewards = torch.tensor([x for x, _ in scores])
        valid = torch.tensor([not e for _, e in scores])
        adv = group_advantages(rewards, k, s.scale_rewards, valid)
        seqs = [Encoded(list(sm.seq.input_ids) + comp, [False] * sm.seq.n_tokens
                        + [True] * len(comp))
                for i, (_, sm) in enumerate(items) for comp in comps[i * k:(i + 1) * k]]
        rv = rewards[valid]
        grp = torch.where(valid, rewards, float("nan")).view(-1, k)
        zero_std = [bool((g[~g.isnan()].max() - g[~g.isnan()].min()) == 0) if (~g.isnan()).any()
                    else True for g in grp]
        r = {"keys": [key for key, _ in items], "used": 0, "seqs": seqs,
             "adv": adv.tolist(), "old": None, "ref": None, "stats": {
                 "reward_mean": float(rv.mean()) if rv.numel() else 0.0,
                 "reward_std": float(rv.std()) if rv.numel() > 1 else 0.0,
                 "parse_error": float((~valid).float().mean()),
                 "frac_zero_std": sum(zero_std) / len(zero_std),
                 "length_mean": sum(len(x) for x in comps) / len(comps)}}
        if s.num_iterations > 1:
            r["old"] = self._per_seq_logps(model, seqs, reference=False)
        if self.beta:
            r["ref"] = self._per_seq_logps(model, seqs, reference=True)
        return r

    @torch.no_grad()
    def _per_seq_logps(self, model, seqs: list[Encoded], reference: bool) -> list[list[float]]:
        """Each sequence's completion-token log-probs, in eval mode; with ``reference``, of the
        base with the adapter off."""
        c = self.ctx
        out: list[list[float]] = []
        was = model.training
        model.eval()
        try:
            for part in split_by_tokens([(i, Sample(e)) for i, e in enumerate(seqs)],
                                        c.hp.max_tokens_per_forward):
                b = make_batch([sm for _, sm in part], c.pad_id, c.device)
                if reference:
                    with model.disable_adapter():
                        lp, rows = token_logps(model, b, c.full_forward)
                else:
                    lp, rows = token_logps(model, b, c.full_forward)
                for j in range(len(part)):
                    out.append(lp[rows == j].tolist())
        finally:
            model.train(was)
        return out

    def _parts(self, r: dict[str, Any]) -> list[StepPart]:
        c, s = self.ctx, self.s
        seqs = r["seqs"]
        out: list[StepPart] = []
        for part in split_by_tokens([(i, Sample(e)) for i, e in enumerate(seqs)],
                                    c.hp.max_tokens_per_forward):
            idx = [i for i, _ in part]
            b = make_batch([sm for _, sm in part], c.pad_id, c.device)
            lengths = torch.tensor([max(seqs[i].n_trained, 1) for i in idx], dtype=torch.float,
                                   device=c.device)
            adv = torch.tensor([r["adv"][i] for i in idx for _ in range(seqs[i].n_trained)],
                               device=c.device)

            def flat(key):
                if r[key] is None:
                    return None
                return torch.tensor([x for i in idx for x in r[key][i]], device=c.device)

            # the part's share of the step's units: the loss_type's denominator
            units = {"grpo": len(idx), "dr_grpo": len(idx) * s.max_completion_length}.get(
                s.loss_type, int(sum(seqs[i].n_trained for i in idx)))
            out.append(RolloutPart(part, units, int(b.mask.sum()), b, adv=adv, old=flat("old"),
                                   ref=flat("ref"), lengths=lengths))
        return out

