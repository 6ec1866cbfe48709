"""Sampling settings (``SamplingParams``), below both generation and the JSON-mode helpers of
``constrained`` (which take them), so neither imports the other back."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

# Below this a temperature is greedy decoding: dividing logits by, say, 1e-174 overflows to
# inf/NaN, and the softmax of logits / 1e-4 is already an argmax unless two logits tie.
GREEDY_BELOW = 1e-4
# what a model's recommendation may set (Catalog.sampling_defaults)
SAMPLING_DEFAULT_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


class SamplingParams(BaseModel):
    """Generation settings with OpenAI's names and defaults (``top_k``, ``min_p`` and
    ``repetition_penalty`` as vLLM and transformers have them; off by default). Servers fill
    what a request omits with the model's recommendation (``with_defaults``)."""

    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int = Field(0, ge=0, description="0: off")
    min_p: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, allow_inf_nan=False)
    max_tokens: int | None = Field(None, ge=1, description="default: the rest of the context")
    stop: list[str] = Field(default_factory=list, max_length=4)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    json_schema: dict[str, Any] | None = Field(
        None, description="constrain the reply to JSON for this schema ({'type': 'object'}: any "
                          "JSON object; see afinar.models.constrained)")

    @classmethod
    def with_defaults(cls, given: dict[str, Any], defaults: dict[str, Any] | None = None
                      ) -> SamplingParams:
        """``given`` (a request's values; ``None`` means omitted) over ``defaults`` (the model's
        recommended sampling, ``Catalog.sampling_defaults``) over OpenAI's defaults. A default
        out of range (a model file's odd value) is skipped, never an error for the request."""
        given = {k: v for k, v in given.items() if v is not None}
        fallback: dict[str, Any] = {}
        for k, v in (defaults or {}).items():
            if k in SAMPLING_DEFAULT_KEYS and k not in given:
                try:
                    cls(**{k: v})
                except ValueError:
                    continue
                fallback[k] = v
        return cls(**{**fallback, **given})

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, v: Any) -> Any:
        if v is None:
            return []
        return [v] if isinstance(v, str) else v

    @field_validator("stop", mode="after")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if any(s == "" for s in v):
            raise ValueError("stop strings must not be empty")
        return v
