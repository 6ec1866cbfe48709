"""What every grader shares: the ``GRADERS`` registry, ``Grader``, ``GradeResult``, the error flags,
``load_grader`` and ``sample_from_text``.

A grader spec is OpenAI's grader object (``{"type": "string_check", "name": ..., ...}``), as a
dict or a ``.yaml``/``.yml``/``.json`` file. Each type is one file in this package with a pydantic
``Spec`` (extra fields refused, no coercion): a bad spec is one ``InvalidRequest`` naming the field
path (``grader.graders.email.operation``, or ``FILE: operation``) before any grading starts.

Grading never raises for a bad sample: a template variable the item lacks, a sample that is not
JSON, a user function that fails, a judge model's reply that does not parse, all score 0 with the
matching flag in ``errors`` (OpenAI's ``<kind>_error`` booleans) and its details in
``metadata["error_details"]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from afinar.errors import InvalidRequest
from afinar.graders.templates import InvalidVariable, SampleNotJson, Template
from afinar.registry import Registry

# OpenAI's error kinds (FIELD-NOTES-2 §2): each is a ``<kind>_error`` flag of every result.
ERROR_KINDS = ("formula_parse", "sample_parse", "truncated_observation", "unresponsive_reward",
               "invalid_variable", "other", "python_grader_server", "python_grader_runtime",
               "model_grader_server", "model_grader_refusal", "model_grader_parse")
GRADER_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def no_errors() -> dict[str, bool]:
    return {f"{k}_error": False for k in ERROR_KINDS}


@dataclass
class GradeResult:
    """One grade: ``score`` (the reward), the sub-graders' scores (``multi``), every error flag,
    and ``metadata`` (name, type, execution_time, scores, token_usage, sampled_model_name, and
    ``error_details`` when a flag is set)."""

    score: float
    sub_rewards: dict[str, float] = field(default_factory=dict)
    errors: dict[str, bool] = field(default_factory=no_errors)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        """The first error kind set (``"invalid_variable"``), or None."""
        return next((k[:-len("_error")] for k, v in self.errors.items() if v), None)


class GraderError(Exception):
    """Raised inside a grader: the grade is 0 with ``<kind>_error`` set."""

    def __init__(self, kind: str, details: str):
        assert kind in ERROR_KINDS, kind
        super().__init__(details)
        self.kind, self.details = kind, details


class Spec(BaseModel):
    """The fields every grader has; each type's ``Spec`` adds its own."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    type: str
    name: str = Field(min_length=1, max_length=256)


ModelLoader = Callable[[str], Any]  # model id -> afinar.models.LoadedModel


@dataclass
class Context:
    """What graders are built with: where the spec came from (for messages) and, for model
    graders, how a model id becomes a loaded model (default: a process-wide ``ModelCache``)."""

    where: str | None = None  # the file, when loaded from one
    model_loader: ModelLoader | None = None
    settings: Any = None
    check_models: bool = True  # look judge models up in the catalog when loading


def spec_error(ctx: Context, path: str, message: str) -> InvalidRequest:
    text = f"{path}: {message}" if path else message
    return InvalidRequest(f"{ctx.where}: {text}" if ctx.where else text, param=path or "grader")


def join(path: str, *parts: object) -> str:
    return ".".join(p for p in (path, *(str(x) for x in parts)) if p)


class Grader:
    """One grader built from a validated spec. Subclasses set ``type`` and ``Spec`` and implement
    ``score(sample, item)``, returning a float or a ``GradeResult`` (``multi``); ``grade`` adds
    the flags and the metadata."""

    type: ClassVar[str]
    Spec: ClassVar[type[Spec]]

    def __init__(self, spec: Spec, path: str, ctx: Context):
        self.spec, self.path, self.ctx = spec, path, ctx

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def range(self) -> tuple[float, float] | None:
        """Where the score lies (None: not known beforehand, as a ``multi`` formula's)."""
        return (0.0, 1.0)

    def models(self) -> list[str]:
        """The model ids this grader asks (judges; a ``multi``'s sub-graders')."""
        return []

    def to_dict(self) -> dict[str, Any]:
        """The spec as OpenAI echoes it (``/graders/validate``)."""
        return self.spec.model_dump(mode="json", exclude_unset=True)

    def template(self, text: str, field_name: str) -> Template:
        try:
            return Template(text, join(self.path, field_name))
        except InvalidRequest as e:
            raise spec_error(self.ctx, e.param or "", e.message.split(": ", 1)[1]) from None

    def bad(self, field_name: str, message: str) -> InvalidRequest:
        return spec_error(self.ctx, join(self.path, field_name), message)

    # --- grading -----------------------------------------------------------------------------

    def score(self, sample: dict[str, Any], item: dict[str, Any]) -> float | GradeResult:
        raise NotImplementedError

    def grade(self, sample: dict[str, Any] | str, item: dict[str, Any] | None = None
              ) -> GradeResult:
        sample, item = as_sample(sample), item or {}
        t0 = time.perf_counter()
        try:
            out = self.score(sample, item)
        except SampleNotJson as e:
            out = flagged("sample_parse", str(e))
        except InvalidVariable as e:
            out = flagged("invalid_variable", str(e))
        except GraderError as e:
            out = flagged(e.kind, e.details)
        return self._finish(out, time.perf_counter() - t0)

    def grade_many(self, samples: list[dict[str, Any] | str],
                   items: list[dict[str, Any] | None]) -> list[GradeResult]:
        if len(samples) != len(items):
            raise InvalidRequest(f"{len(samples)} samples for {len(items)} items",
                                 param="samples")
        return [self.grade(s, i) for s, i in zip(samples, items)]

    def _finish(self, out: float | GradeResult, seconds: float) -> GradeResult:
        r = out if isinstance(out, GradeResult) else GradeResult(float(out))
        if r.score != r.score or r.score in (float("inf"), float("-inf")):  # NaN / inf
            r = flagged("other", f"the score is not finite ({r.score})")
        r.errors = {**no_errors(), **r.errors}
        meta = {"name": self.name, "type": self.type, "execution_time": round(seconds, 6),
                "scores": dict(r.sub_rewards), "token_usage": None, "sampled_model_name": None}
        r.metadata = {**meta, **r.metadata}
        return r


def flagged(kind: str, details: str) -> GradeResult:
    errors = no_errors()
    errors[f"{kind}_error"] = True
    return GradeResult(0.0, errors=errors, metadata={"error_details": {kind: details[:2000]}})


GRADERS: Registry[type[Grader]] = Registry("grader", "afinar.graders", param="type")


def run_object(result: GradeResult) -> dict[str, Any]:
    """OpenAI's ``/fine_tuning/alpha/graders/run`` response for one result: ``reward``,
    ``sub_rewards``, ``model_grader_token_usage_per_model`` and ``metadata`` (name, type,
    execution_time, scores, sampled_model_name, token_usage, errors: every ``<kind>_error`` flag
    and, for a set one, ``<kind>_error_details``)."""
    m = result.metadata
    errors: dict[str, Any] = dict(result.errors)
    for kind, details in (m.get("error_details") or {}).items():
        kind = kind.rsplit(".", 1)[-1]  # multi: "<variable>.<kind>"
        if kind in ERROR_KINDS:
            errors.setdefault(f"{kind}_error_details", details)
    return {"reward": result.score, "sub_rewards": dict(result.sub_rewards),
            "model_grader_token_usage_per_model": dict(m.get("token_usage_per_model") or {}),
            "metadata": {"name": m.get("name"), "type": m.get("type"),
                         "execution_time": m.get("execution_time", 0.0),
                         "scores": dict(m.get("scores") or {}),
                         "sampled_model_name": m.get("sampled_model_name"),
                         "token_usage": m.get("token_usage"), "errors": errors}}


def as_sample(sample: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(sample, str):
        return sample_from_text(sample)
    if not isinstance(sample, dict):
        raise InvalidRequest("a sample is a dict (sample_from_text) or a string", param="sample")
    return sample


def sample_from_text(text: str, response_format: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """The grader's ``sample`` for a model's text answer: ``output_json`` is the parsed text when
    it is JSON (with ``response_format`` ``text``: never; ``json_object``/``json_schema``: when it
    parses), else None."""
    kind = (response_format or {}).get("type") if isinstance(response_format, dict) else None
    output_json = None
    if kind != "text":
        try:
            output_json = json.loads(text)
        except (ValueError, TypeError):
            output_json = None
    return {"output_text": text, "output_json": output_json, "output_tools": [],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}]}


# --- loading ---------------------------------------------------------------------------------

def read_spec_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InvalidRequest(f"grader file not found: {path}", param="grader")
    if path.suffix.lower() not in GRADER_FILE_SUFFIXES:
        raise InvalidRequest(f"{path}: a grader file is .yaml, .yml or .json", param="grader")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidRequest(f"{path}:{e.lineno}: not JSON ({e.msg} at column {e.colno})",
                                 param="grader") from None
    else:
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f":{mark.line + 1}" if mark is not None else ""
            raise InvalidRequest(f"{path}{at}: not YAML: {getattr(e, 'problem', e)}",
                                 param="grader") from None
    if isinstance(raw, dict) and set(raw) == {"grader"}:  # a /graders/validate body
        raw = raw["grader"]
    return raw


def build(raw: Any, path: str, ctx: Context) -> Grader:
    """A grader from one spec object at ``path`` (``grader``, ``grader.graders.x``)."""
    if not isinstance(raw, dict):
        raise spec_error(ctx, path, "a grader is an object with a type")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise spec_error(ctx, join(path, "type"), f"required; one of {', '.join(GRADERS)}")
    if kind not in GRADERS:
        raise spec_error(ctx, join(path, "type"), GRADERS.unknown(kind).message)
    cls = GRADERS.get(kind)
    try:
        spec = cls.Spec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = join(path, *err["loc"])
        raise spec_error(ctx, loc, err["msg"]) from None
    return cls(spec, path, ctx)


def load_grader(spec: dict[str, Any] | str | Path, *, model_loader: ModelLoader | None = None,
                settings: Any = None, check_models: bool | None = None) -> Grader:
    """A grader from OpenAI's grader object, or from a ``.yaml``/``.yml``/``.json`` file holding
    one. A bad spec raises one ``InvalidRequest`` naming the field path (and the file).

    ``model_loader`` (model id -> loaded model) serves the model graders; by default they load
    through a process-wide ``ModelCache``. Judge models are looked up in the catalog when the
    grader is loaded (``check_models``; default: only without a ``model_loader``, which may serve
    ids of its own)."""
    check = model_loader is None if check_models is None else check_models
    if isinstance(spec, (str, Path)):
        p = Path(spec)
        ctx = Context(where=str(p), model_loader=model_loader, settings=settings,
                      check_models=check)
        return build(read_spec_file(p), "", ctx)
    ctx = Context(model_loader=model_loader, settings=settings, check_models=check)
    return build(spec, "grader", ctx)


__all__ = ["ERROR_KINDS", "GRADERS", "Context", "GradeResult", "Grader", "GraderError", "Spec",
           "as_sample", "build", "flagged", "load_grader", "no_errors", "run_object",
           "sample_from_text",
           "spec_error"]
