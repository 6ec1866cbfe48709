"""Reinforcement fine-tuning with GRPO (``afinar.tuning.objectives.grpo``) on a LoRA policy:
prompts without answers (``messages`` ending with a user turn; the row's other keys are the
grader's ``item``), rewarded by a grader (``afinar.graders``), the OpenAI RFT job's shape.

The grader spec is one of the method's options, so it is stored with the job (its ``method``
record) and a resumed job grades as the first run did; it is loaded (and so checked) when the
method is built: a bad spec is one ``InvalidRequest`` naming ``grader``, before a job exists.
OpenAI's RFT hyperparameters that have no afinar equivalent are options too:
``compute_multiplier`` scales ``num_generations`` (at least 2), ``reasoning_effort`` is kept and
echoed but changes nothing (the models afinar tunes do not reason); ``response_format`` is
echoed and reaches the grader through ``sample_from_text`` (sampling is not constrained).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from afinar.errors import InvalidRequest
from afinar.tuning.methods.base import BuildContext, Method, register
from afinar.tuning.methods.lora import LoraOptions, lora_config


class GrpoOptions(LoraOptions):
    grader: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    num_generations: int = Field(4, ge=2, le=64, description="completions per prompt")
    scale_rewards: Literal["group", "batch", "none"] = "group"
    epsilon: float = Field(0.2, gt=0, lt=1)
    epsilon_high: float | None = Field(None, gt=0, lt=10, description="default: epsilon")
    num_iterations: int = Field(1, ge=1, le=16, description="optimizer steps per rollout")
    loss_type: Literal["dapo", "grpo", "dr_grpo"] = "dapo"
    temperature: float = Field(1.0, gt=0, le=2)
    max_completion_length: int = Field(64, ge=1, le=8192)
    compute_multiplier: Annotated[float, Field(ge=1e-5, le=10)] | Literal["auto"] = "auto"
    reasoning_effort: Literal["auto", "default", "low", "medium", "high"] = "auto"
    # OpenAI's eval_interval / eval_samples, kept for the echo (the job's eval_every_steps and
    # eval_sample_size do the work: ``Grpo.from_openai``)
    eval_interval: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    eval_samples: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"


# OpenAI's RFT hyperparameters that are options here, and the afinar hyperparameter each sets
RFT_ONLY = {"compute_multiplier": None, "reasoning_effort": None,
            "eval_interval": "eval_every_steps", "eval_samples": "eval_sample_size"}


def load_reward(spec: dict[str, Any] | None, response_format: dict[str, Any] | None = None,
                param: str = "grader"):
    """The grader of ``spec`` as GRPO's reward (texts, items -> (score, errored) pairs)."""
    if not spec:
        raise InvalidRequest("method grpo needs a grader (an OpenAI grader object: "
                             "string_check, text_similarity, python, score_model or multi)",
                             param=param)
    from afinar.graders import load_grader, sample_from_text

    try:
        grader = load_grader(spec)
    except InvalidRequest as e:
        raise InvalidRequest(f"bad grader: {e.message}", code=e.code,
                             param=f"{param}.{e.param}" if e.param and not e.param.startswith(
                                 param) else (e.param or param)) from None

    def reward(texts: list[str], items: list[dict]) -> list[tuple[float, bool]]:
        results = grader.grade_many([sample_from_text(t, response_format) for t in texts], items)
        return [(float(r.score), any(bool(v) for v in (r.errors or {}).values()))
                for r in results]

    return reward


@register
class Grpo(Method):
    name = "grpo"
    data_kind = "prompt"
    objective = "grpo"
    base_lr = 5e-5
    config_cls = GrpoOptions

    def __init__(self, config=None):
        super().__init__(config)
        # a bad grader fails here, named
        self.reward = load_reward(self.config.grader, self.config.response_format)
        self.tokenizer = None

    @classmethod
    def from_openai(cls, options: dict[str, Any], hyperparameters: dict[str, Any]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """OpenAI's ``method.reinforcement``: ``grader``/``response_format`` are options as they
        are; of its hyperparameters, ``compute_multiplier``, ``reasoning_effort``,
        ``eval_interval`` and ``eval_samples`` become options (kept for the echo), the last two
        also the job's ``eval_every_steps`` and ``eval_sample_size`` unless ``auto``."""
        options, hp = dict(options), dict(hyperparameters)
        for key, field in RFT_ONLY.items():
            if key in hp:
                value = options[key] = hp.pop(key)
                if field and value != "auto":
                    hp[field] = value
        return options, hp

    @property
    def updates_per_batch(self) -> int:  # type: ignore[override]
        return self.config.num_iterations

    def settings(self):
        from afinar.tuning.objectives.grpo import GrpoSettings

        o = self.config
        k = o.num_generations
        if o.compute_multiplier != "auto":
            k = max(2, round(k * float(o.compute_multiplier)))
        return GrpoSettings(num_generations=k, scale_rewards=o.scale_rewards,
                            epsilon=o.epsilon, epsilon_high=o.epsilon_high,
                            num_iterations=o.num_iterations, loss_type=o.loss_type,
                            temperature=o.temperature,
                            max_completion_length=o.max_completion_length)

    def make_objective(self, ctx):
        return self.objective_class()(ctx, self.settings(), self.reward, self.tokenizer)

    def build(self, model, ctx: BuildContext):
        from peft import get_peft_model

        self.tokenizer = ctx.tokenizer  # the objective decodes its samples with it
        return get_peft_model(model, lora_config(LoraOptions(
            r=self.config.r, alpha=self.config.alpha, dropout=self.config.dropout,
            target_modules=self.config.target_modules)))
