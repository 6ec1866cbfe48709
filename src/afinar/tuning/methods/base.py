"""What a tuning method is: a name, the data it trains on, the objective that turns its batches
into a loss, a config, how it makes a base model trainable and saves the result, and the traits
of what it saves. Methods register themselves in ``METHODS`` (entry points ``afinar.methods``).

The traits are written into every fine-tuned model's manifest (``traits()``), so that loading,
hosting and merging read them from the model instead of guessing from the method's name:

- ``artifact``: ``adapter`` (PEFT weights over the base), ``prompt`` (PEFT virtual tokens,
  prepended by the forward) or ``full`` (a complete model folder);
- ``shares_base``: one loaded base can host it next to other adapters (LoRA-like weights);
- ``mergeable``: its weights can be merged into the base to make one plain model;
- ``objective``: the objective's name (``afinar.tuning.objectives``);
- ``data_kind``: what it trains on: ``sft`` (chat/completion), ``text`` or ``preference``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from afinar.errors import InvalidRequest
from afinar.registry import Registry

if TYPE_CHECKING:
    from afinar.tuning.objectives import Objective, ObjectiveContext

Artifact = Literal["adapter", "prompt", "full"]


@dataclass
class BuildContext:
    model_dir: Path  # the base model's HF folder (a GGUF's converted cache)
    tokenizer: Any
    device: str


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Method:
    name: ClassVar[str]
    data_kind: ClassVar[str] = "sft"  # sft (chat/completion) | text | preference
    objective: ClassVar[str] = "sft"  # a name in afinar.tuning.objectives.OBJECTIVES
    base_lr: ClassVar[float] = 2e-4
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    # What it saves (see the module's docstring); a method whose options change it (continued
    # pretraining with ``adapter: full``) sets these on the instance.
    artifact: Artifact = "adapter"
    shares_base: bool = True
    mergeable: bool = True
    full_forward: ClassVar[bool] = False  # needs the wrapped forward (virtual tokens)
    # optimizer steps on each batch, one after another (GRPO's num_iterations: the same
    # rollouts trained on again); counted in the job's total_steps
    updates_per_batch: int = 1
    # the method a job request's OpenAI ``method.type`` means when several methods train that
    # type's objective (``supervised``: lora); see ``method_for_type``. Not inherited: a
    # subclass of lora is not the default too.
    default_for_type: ClassVar[bool] = False

    def __init__(self, config: MethodConfig | dict | None = None):
        if isinstance(config, MethodConfig):
            self.config = config
        else:
            self.config = self.config_cls(**(config or {}))

    @property
    def is_adapter(self) -> bool:
        """Saved as a PEFT folder over the base (an adapter or virtual tokens)."""
        return self.artifact != "full"

    def traits(self) -> dict[str, Any]:
        """What the manifest says about this method's model (``manifest["traits"]``)."""
        return {"artifact": self.artifact, "shares_base": self.shares_base,
                "mergeable": self.mergeable, "objective": self.objective,
                "data_kind": self.data_kind}

    @classmethod
    def from_openai(cls, options: dict[str, Any], hyperparameters: dict[str, Any]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A job request's ``method[type]`` options and hyperparameters as this method takes
        them (OpenAI's RFT hyperparameters that have no afinar field: GRPO's). Default: as
        they are."""
        return options, hyperparameters

    def objective_class(self) -> type[Objective]:
        from afinar.tuning.objectives import OBJECTIVES  # torch: only once training is near

        return OBJECTIVES.get(self.objective)

    def make_objective(self, ctx: ObjectiveContext) -> Objective:
        """The objective this method trains with, for one run (``Trainer`` asks for it)."""
        return self.objective_class()(ctx)

    def check_device(self, device: str) -> None:
        """Raise InvalidRequest when the method cannot run on this device."""

    def load_kwargs(self, device: str) -> dict[str, Any]:
        """Extra ``from_pretrained`` arguments for the base model (quantisation)."""
        return {}

    def build(self, model, ctx: BuildContext):
        raise NotImplementedError

    def save(self, model, out_dir: Path, tokenizer) -> None:
        model.save_pretrained(out_dir)
        if not self.is_adapter:
            tokenizer.save_pretrained(out_dir)


METHODS: Registry[type[Method]] = Registry("method", "afinar.methods", param="method")
register = METHODS.register()  # ``@register`` on a class registers it under its ``name``


def objective_of(method: str) -> type[Objective] | None:
    """The objective class a registered method trains with; None for a name no longer
    registered (a job made with a plugin since removed still lists)."""
    from afinar.tuning.objectives import OBJECTIVES

    if method not in METHODS:
        return None
    return OBJECTIVES.get(METHODS.get(method).objective)


def method_for_type(kind: str) -> str:
    """The method a job request's ``method.type`` names. An OpenAI type (an objective's
    ``openai_type``: ``supervised``, ``dpo``, ``reinforcement``, afinar's ``kto``...) means the
    one method that trains an objective of that type, or among several the one marked
    ``default_for_type``; any other name is taken for a method's own name (an unknown one is
    ``get_method``'s error)."""
    from afinar.tuning.objectives import OBJECTIVES

    if kind in METHODS:
        return kind
    objectives = {n for n, cls in OBJECTIVES.items() if cls.openai_type == kind}
    methods = [n for n, cls in METHODS.items() if cls.objective in objectives]
    chosen = [n for n in methods if vars(METHODS.get(n)).get("default_for_type")]
    if len(methods) == 1 or len(chosen) == 1:
        return (chosen or methods)[0]
    return kind


def get_method(name: str, config: dict | None = None) -> Method:
    """The method ``name`` built with its options; an unknown name or bad options is one
    ``InvalidRequest`` (param ``method``)."""
    cls = METHODS.get(name)
    try:
        return cls(config)
    except ValueError as e:  # pydantic's validation of the method's options
        raise InvalidRequest(f"bad options for method {name}: {e}", param="method") from e
