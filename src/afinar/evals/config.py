"""What an evaluation runs: ``eval.yaml`` (or the same options as CLI flags).

    name: support
    test_file: test.jsonl            # held-out chat JSONL; relative paths: to this file
    train_file: train.jsonl          # the few-shot pool
    model: smollm2-135m-instruct     # default model of every strategy
    knowledge_base: acme-support     # default knowledge base of rag strategies
    generation: {temperature: 0, max_tokens: 64}
    strategies:
      - type: base
      - {type: few_shot, k: 3}
      - {type: rag, k: 2}
      - {type: fine_tuned, jobs: [ftjob-...]}        # or models: [ft:..., ft:...:ckpt-step-20]
      - {type: fine_tuned_rag, jobs: [ftjob-...], k: 2}
    metrics: [json_match, json_valid, {name: label_accuracy, field: topic,
              labels: [warranty, reset, setup, power]}, contains_all, retrieval_recall]
    main_metric: json_match
    forgetting: {threshold: 0.10}    # or false
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from afinar.errors import InvalidRequest
from afinar.evals.metrics import METRICS
from afinar.evals.metrics import grader as grader_metric
from afinar.evals.strategies import STRATEGIES, StrategySpec


def _known_metric(spec: str | dict[str, Any]) -> str | dict[str, Any]:
    """A metric name, or ``{name: ..., **options}``, whose name is registered (its options are
    checked when the metric is built); ``{grader: ...}`` is the ``grader`` metric."""
    if isinstance(spec, dict) and "grader" in spec and "name" not in spec:
        spec = {"name": "grader", **spec}
    name = spec if isinstance(spec, str) else spec.get("name")
    if name is None:
        raise PydanticCustomError("metric_name", "a metric with options needs its name "
                                  "(name: label_accuracy, labels: [...]); known: {known}",
                                  {"known": ", ".join(METRICS.names())})
    if name not in METRICS:
        raise PydanticCustomError("unknown_metric", "{message}",
                                  {"message": METRICS.unknown(name).message})
    return spec


MetricSpec = Annotated[str | dict[str, Any], AfterValidator(_known_metric)]


class ForgettingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.10, gt=0, le=1, description="flag a relative perplexity rise or "
                             "an absolute accuracy drop beyond this")
    text_file: str | None = None  # general held-out text (default: the one shipped)
    qa_file: str | None = None  # general questions, JSONL {"question", "answer"}


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    project: str = Field("default", min_length=1, max_length=64,
                         description="the project the run belongs to (as keys, files, jobs)")
    test_file: str
    train_file: str | None = None
    model: str | None = None
    knowledge_base: str | None = None
    strategies: list[StrategySpec] = Field(default_factory=lambda: [StrategySpec(type="base")],
                                           min_length=1)
    metrics: list[MetricSpec] = Field(
        default_factory=lambda: ["normalized_exact_match", "token_f1"], min_length=1)
    main_metric: str | None = None
    generation: dict[str, Any] = Field(default_factory=dict)
    limit: int | None = Field(None, ge=1)
    forgetting: ForgettingSpec | bool = True
    bootstrap_samples: int = Field(1000, ge=100, le=100_000)
    seed: int = 0

    @field_validator("strategies", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        return [{"type": x} if isinstance(x, str) else x for x in v] if isinstance(v, list) else v

    def metric_names(self) -> list[str]:
        return [grader_metric.column(m) for m in self.metrics]

    @property
    def main(self) -> str:
        return self.main_metric or self.metric_names()[0]

    def with_fine_tuned(self, models: list[str]) -> EvalConfig:
        """Fine-tuned strategies that name no model get ``models`` (the CLI's --fine-tuned)."""
        if not models:
            return self
        strategies = [s.model_copy(update={"models": list(models)})
                      if STRATEGIES.get(s.type).fine_tuned and not (s.model or s.models or s.jobs)
                      else s for s in self.strategies]
        return self.model_copy(update={"strategies": strategies})

    def forgetting_spec(self) -> ForgettingSpec | None:
        if self.forgetting is False:
            return None
        return ForgettingSpec() if self.forgetting is True else self.forgetting

    def resolved(self, base: Path) -> EvalConfig:
        """Relative file paths made absolute against ``base`` (the YAML file's folder)."""
        def fix(p: str | None) -> str | None:
            return None if p is None else str((base / p).resolve()) if not Path(p).is_absolute() \
                else p

        strategies = [s.model_copy(update={"train_file": fix(s.train_file)})
                      for s in self.strategies]
        metrics = [grader_metric.inline(m, base, f"metrics.{i}")  # a grader file read now
                   if isinstance(m, dict) and m.get("name") == "grader" else m
                   for i, m in enumerate(self.metrics)]
        out = self.model_copy(update={"test_file": fix(self.test_file),
                                      "train_file": fix(self.train_file),
                                      "strategies": strategies, "metrics": metrics})
        names = out.metric_names()
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise InvalidRequest(f"two metrics named {twice[0]!r} (a grader's name is its "
                                 "metric's)", param="metrics")
        if out.main not in names:
            raise InvalidRequest(f"main_metric {out.main!r} is not among the metrics "
                                 f"({', '.join(names)})", param="main_metric")
        f = out.forgetting_spec()
        if f is not None:
            out.forgetting = f.model_copy(update={"text_file": fix(f.text_file),
                                                  "qa_file": fix(f.qa_file)})
        return out


def load_config(path: str | Path, **overrides: Any) -> EvalConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InvalidRequest(f"evaluation file not found: {path}", param="config")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise InvalidRequest(f"{path}: not YAML: {e}", param="config") from None
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: expected a mapping of options", param="config")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return parse_config(raw, path.parent, str(path))


def parse_config(raw: dict[str, Any], base: Path = Path("."), where: str = "options"
                 ) -> EvalConfig:
    try:
        cfg = EvalConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise InvalidRequest(f"{where}: {loc}: {err['msg']}", param=loc) from None
    return cfg.resolved(base)
