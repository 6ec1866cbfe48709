"""What a tuning method is: a name, the data it trains on, a config, and how it makes a base
model trainable and saves the result. Methods register themselves in ``REGISTRY``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

REGISTRY: dict[str, type[Method]] = {}


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
    base_lr: ClassVar[float] = 2e-4
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    is_adapter: ClassVar[bool] = True  # saves a PEFT adapter (else a full model folder)
    full_forward: ClassVar[bool] = False  # needs the wrapped forward (virtual tokens)

    def __init__(self, config: MethodConfig | dict | None = None):
        if isinstance(config, MethodConfig):
            self.config = config
        else:
            self.config = self.config_cls(**(config or {}))

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


def register(cls: type[Method]) -> type[Method]:
    REGISTRY[cls.name] = cls
    return cls


def get_method(name: str, config: dict | None = None) -> Method:
    from afinar.errors import InvalidRequest

    if name not in REGISTRY:
        raise InvalidRequest(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}",
                             param="method")
    try:
        return REGISTRY[name](config)
    except ValueError as e:  # pydantic validation of the method's options
        raise InvalidRequest(f"bad options for method {name}: {e}", param="method") from e
