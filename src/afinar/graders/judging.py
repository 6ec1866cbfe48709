"""The one model-judge code path: ``score_model`` and ``label_model`` (and the evaluation's
``judge`` metric, which is a ``label_model``) ask a chosen local model for a verdict decoded under
a JSON schema (``afinar.models.constrained.json_chat``), so the reply always parses or is cut.

The model is a catalog id (``smollm2-135m-instruct``, a registered model, an ``ft:`` fine-tune;
default: ``Settings.default_model``), checked when the grader is loaded and served by a
process-wide ``ModelCache`` unless the caller hands a ``model_loader`` (the evaluation runner
and the server share their own caches). ``input`` is OpenAI's message list (``role`` user /
assistant / system / developer, ``content`` a string, ``input_text``/``output_text`` parts, or a
list of them); each text is a template. Images and audio are refused: the local judges read
text.

A reply cut by ``max_completions_tokens`` scores 0 with ``model_grader_parse_error``; a failure
of the model itself (a prompt over its context, a load error) with ``model_grader_server_error``.
Sampling defaults to greedy (temperature 0) so a verdict is reproducible; ``sampling_params``
(temperature, top_p, seed, ``max_completions_tokens``, ``reasoning_effort`` recorded only) change
it.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from afinar.errors import AfinarError
from afinar.graders.base import Grader, GraderError, Spec, spec_error, join

DEFAULT_MAX_TOKENS = 512
STEPS_SCHEMA = {"type": "array", "minItems": 1, "maxItems": 2, "items": {
    "type": "object", "properties": {"description": {"type": "string", "maxLength": 100},
                                     "conclusion": {"type": "string", "maxLength": 100}},
    "required": ["description", "conclusion"], "additionalProperties": False}}


class SamplingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0)
    max_completions_tokens: int | None = Field(None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)  # the other spelling
    reasoning_effort: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["user", "assistant", "system", "developer"]
    content: str | dict[str, Any] | list[Any]
    type: Literal["message"] | None = None


class JudgeSpec(Spec):
    model: str | None = Field(None, min_length=1)  # default: Settings.default_model
    input: list[Message] = Field(min_length=1)


_cache_lock = threading.Lock()
_cache = None


def default_loader(settings=None):
    """model id -> loaded model through one process-wide ``ModelCache``."""
    global _cache
    with _cache_lock:
        if _cache is None:
            from afinar.models.cache import ModelCache

            _cache = ModelCache()
        cache = _cache
    return lambda model_id: cache.get(model_id, settings=settings)


class ModelJudge(Grader):
    """What ``score_model`` and ``label_model`` share; they give ``schema()`` and ``verdict``."""

    def __init__(self, spec, path, ctx):
        super().__init__(spec, path, ctx)
        from afinar.settings import get_settings

        self.model_id = spec.model or (ctx.settings or get_settings()).default_model
        self.messages = [(m.role, self._parts(m.content, join("input", i, "content")))
                         for i, m in enumerate(spec.input)]
        if ctx.check_models:
            self._check_model()
        self.loader = ctx.model_loader or default_loader(ctx.settings)
        sp = getattr(spec, "sampling_params", None) or SamplingSpec()
        self.sampling = sp

    def _parts(self, content: Any, where: str) -> list:
        parts = content if isinstance(content, list) else [content]
        out = []
        for k, p in enumerate(parts):
            at = where if not isinstance(content, list) else join(where, k)
            if isinstance(p, str):
                out.append(self.template(p, at))
            elif isinstance(p, dict) and p.get("type") in ("input_text", "output_text") \
                    and isinstance(p.get("text"), str) and set(p) == {"type", "text"}:
                out.append(self.template(p["text"], at + ".text"))
            elif isinstance(p, dict) and p.get("type") in ("input_image", "input_audio"):
                raise self.bad(at, f"{p['type']}: the local judge models read text only")
            else:
                raise self.bad(at, "a string, {type: input_text, text} or {type: output_text, "
                               "text}, or a list of them")
        return out

    def _check_model(self) -> None:
        from afinar.models.catalog import Catalog

        try:
            info = Catalog(self.ctx.settings).get(self.model_id)
        except AfinarError as e:
            raise spec_error(self.ctx, join(self.path, "model"), e.message) from None
        if info.kind != "chat":
            raise self.bad("model", f"{self.model_id} is a {info.kind} model, not a chat model")

    def models(self) -> list[str]:
        return [self.model_id]

    # --- asking the model --------------------------------------------------------------------

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def instruction(self) -> str:
        raise NotImplementedError

    def render(self, sample, item) -> list[dict[str, str]]:
        msgs = [{"role": "system" if role == "developer" else role,
                 "content": "".join(t.render(sample, item) for t in parts)}
                for role, parts in self.messages]
        hint = self.instruction()
        if msgs[0]["role"] == "system":
            msgs[0] = {**msgs[0], "content": f"{msgs[0]['content']}\n\n{hint}"}
        else:
            msgs.insert(0, {"role": "system", "content": hint})
        return msgs

    def ask(self, sample, item) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the parsed reply, metadata with token usage); errors as ``GraderError``."""
        from afinar.models.constrained import JsonIncomplete, json_chat
        from afinar.models.generation import Generator, SamplingParams

        messages = self.render(sample, item)  # InvalidVariable here: no model work
        sp = self.sampling
        params = SamplingParams(
            temperature=0.0 if sp.temperature is None else sp.temperature,
            top_p=1.0 if sp.top_p is None else sp.top_p, seed=sp.seed,
            max_tokens=sp.max_completions_tokens or sp.max_completion_tokens
            or DEFAULT_MAX_TOKENS)
        try:
            lm = self.loader(self.model_id)
            value, result = json_chat(Generator(lm), messages, self.schema(), params)
        except JsonIncomplete as e:
            raise GraderError("model_grader_parse", e.message) from None
        except AfinarError as e:
            raise GraderError("model_grader_server", f"{self.model_id}: {e.message}") from None
        usage = {"prompt_tokens": result.prompt_tokens,
                 "completion_tokens": result.completion_tokens,
                 "total_tokens": result.total_tokens, "cached_tokens": 0}
        return value, {"sampled_model_name": self.model_id, "token_usage": usage,
                       "token_usage_per_model": {self.model_id: usage}}


def reason(value: dict[str, Any]) -> str | None:
    """The judge's last conclusion (the evaluation's note)."""
    steps = value.get("steps") or []
    return str(steps[-1].get("conclusion", "")) if steps else None


__all__ = ["DEFAULT_MAX_TOKENS", "JudgeSpec", "Message", "ModelJudge", "STEPS_SCHEMA",
           "SamplingSpec", "default_loader", "reason"]
