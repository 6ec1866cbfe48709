"""Strategies: a registry of ways to answer a test case, laid out the same way (PEFT's pattern).

    base            the test's own messages, zero-shot
    few_shot        k (user, assistant) pairs from the training file, the most similar to the
                    question by embedding, as earlier turns
    rag             the test's messages with the top-k chunks of a knowledge base in the system
                    message (``afinar.evals.prompts.with_sources``)
    fine_tuned      a fine-tuned model (``ft:`` id or checkpoint id) on the test's messages
    fine_tuned_rag  both

Every strategy may set its own ``model``, ``system`` prompt (replacing the test's), a
``user_template`` for the question (``"Ticket: {question}"``), ``instructions`` for the sources,
``k`` and ``generation`` settings; unset ones come from the run.

Each is a ``Strategy`` subclass registered in ``STRATEGIES`` under its type
(``@STRATEGIES.register("base")``); third-party strategies register through the
``afinar.strategies`` entry point group (``afinar.registry``). ``StrategySpec.type`` takes its
choices from the registry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from afinar.errors import AfinarError, InvalidRequest
from afinar.evals.cases import Case, read_shots
from afinar.evals.metrics import Prediction
from afinar.evals.prompts import RAG_INSTRUCTIONS, with_examples, with_sources
from afinar.models.generation import Generator, SamplingParams
from afinar.models.templates import render_ids
from afinar.registry import Registry

STRATEGIES: Registry[type[Strategy]] = Registry("strategy", "afinar.strategies",
                                                param="strategies")


def _known(name: str) -> str:
    """A strategy type that is registered (config validation: the one registry error)."""
    if name not in STRATEGIES:
        raise PydanticCustomError("unknown_strategy", "{message}",
                                  {"message": STRATEGIES.unknown(name).message})
    return name


class StrategySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Annotated[str, AfterValidator(_known)]  # a name in STRATEGIES
    name: str | None = None
    model: str | None = None  # base model; for fine_tuned*: the ft: id or checkpoint id
    models: list[str] = Field(default_factory=list)  # fine_tuned*: several, one column each
    jobs: list[str] = Field(default_factory=list)  # fine_tuned*: the jobs' fine-tuned models
    k: int | None = Field(None, ge=1, le=32)
    system: str | None = None  # replaces the test's system prompt
    user_template: str | None = None  # the last user message as "...{question}..."
    instructions: str | None = None
    knowledge_base: str | None = None
    groups: list[str] | None = None  # retrieve as a reader of these groups (default: all)
    rerank: str | None = None  # rerank the hits: llm, llm:MODEL, cross-encoder:PATH, overlap
    train_file: str | None = None
    generation: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Context:
    """What strategies share within a run: loaded models, the few-shot pool, knowledge bases."""

    load: Any  # model id -> LoadedModel
    default_model: str
    train_file: str | None = None
    knowledge_base: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    _pools: dict[str, tuple[list[tuple[str, str]], np.ndarray]] = field(default_factory=dict)

    def pool(self, path: str) -> tuple[list[tuple[str, str]], np.ndarray]:
        if path not in self._pools:
            from afinar.rag.embeddings import get_embedder

            shots = read_shots(path)
            vecs = get_embedder().encode([u for u, _ in shots])
            self._pools[path] = (shots, np.asarray(vecs, dtype=np.float32))
        return self._pools[path]


class Strategy:
    """A way to answer a case: registered in ``STRATEGIES`` under its type, built from a
    ``StrategySpec`` (the registry name is ``spec.type``, also ``self.type``)."""

    uses_kb: ClassVar[bool] = False
    fine_tuned: ClassVar[bool] = False

    def __init__(self, spec: StrategySpec, ctx: Context):
        self.spec, self.ctx, self.type = spec, ctx, spec.type
        self.model = spec.model or ctx.default_model
        self.name = spec.name or self.type
        settings = {**ctx.generation, **spec.generation}
        try:
            self.params = SamplingParams(**{"temperature": 0, "max_tokens": 256, **settings})
        except ValueError as e:
            raise InvalidRequest(f"strategy {self.name}: generation: {e}",
                                 param="generation") from None
        if spec.user_template is not None and "{question}" not in spec.user_template:
            raise InvalidRequest(f"strategy {self.name}: user_template needs {{question}}",
                                 param="user_template")
        self.kb = spec.knowledge_base or ctx.knowledge_base
        if self.uses_kb and not self.kb:
            raise InvalidRequest(f"strategy {self.name} needs a knowledge_base",
                                 param="knowledge_base")
        self._reranker = None
        if spec.rerank:
            from afinar.rag.rerank import parse_name

            try:
                parse_name(spec.rerank)
            except InvalidRequest as e:
                raise InvalidRequest(f"strategy {self.name}: rerank: {e}",
                                     param="rerank") from None

    def base_messages(self, case: Case) -> list[dict[str, Any]]:
        msgs = [dict(m) for m in case.messages]
        if self.spec.user_template is not None:
            last = max(i for i, m in enumerate(msgs) if m.get("role") == "user")
            msgs[last]["content"] = self.spec.user_template.replace("{question}", case.question)
        if self.spec.system is not None:
            if msgs and msgs[0].get("role") in ("system", "developer"):
                msgs[0]["content"] = self.spec.system
            else:
                msgs.insert(0, {"role": "system", "content": self.spec.system})
        return msgs

    def retrieve(self, case: Case) -> list[dict[str, Any]]:
        from afinar.rag.kb import KnowledgeBases

        if self.spec.rerank and self._reranker is None:
            from afinar.rag.rerank import get_reranker

            # llm: the strategy's own chat model, loaded through the run's model cache
            self._reranker = get_reranker(self.spec.rerank, lm=self.ctx.load(self.model))
        hits = KnowledgeBases().search(self.kb, case.question, k=self.spec.k or 3,
                                       groups=self.spec.groups, reranker=self._reranker)
        return [{"source": h.source, "text": h.text, "chunk_id": h.chunk_id,
                 "heading_path": h.heading_path} for h in hits]

    def prompt(self, case: Case) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """The messages to send and the sources they hold (None: no retrieval)."""
        msgs = self.base_messages(case)
        if not self.uses_kb:
            return msgs, None
        sources = self.retrieve(case)
        msgs = with_sources(msgs, [(s["source"], s["text"]) for s in sources],
                            self.spec.instructions or RAG_INSTRUCTIONS)
        return msgs, sources

    def answer(self, case: Case) -> Prediction:
        lm = self.ctx.load(self.model)  # loading is not the answer's latency
        w0, t0 = time.time(), time.perf_counter()
        try:
            msgs, sources = self.prompt(case)
            g0 = time.perf_counter()
            r = Generator(lm).chat(msgs, self.params)
        except AfinarError as e:  # e.g. a prompt over the context: recorded, scored as wrong
            return Prediction("", error=f"{e.code}: {e}", latency_s=time.perf_counter() - t0,
                              started_at=w0, ended_at=time.time())
        t1, w1 = time.perf_counter(), time.time()
        own = len(render_ids(lm.tokenizer, self.base_messages(case)))
        return Prediction(r.text, r.prompt_tokens, r.completion_tokens, t1 - t0, t1 - g0, sources,
                          added_tokens=r.prompt_tokens - own, started_at=w0, ended_at=w1)

    def warm_up(self, case: Case) -> None:
        """Load what answering needs before any timing starts: the model, and for strategies
        that embed (few-shot pools, retrieval) the embedding model and indexes, by building one
        prompt untimed."""
        self.ctx.load(self.model)
        if self.uses_kb or type(self).prompt is not Strategy.prompt:
            try:
                self.prompt(case)
            except AfinarError:
                pass  # answered (and recorded as an error) in the timed pass


@STRATEGIES.register("base")
class Base(Strategy):
    pass


@STRATEGIES.register("few_shot")
class FewShot(Strategy):
    def __init__(self, spec, ctx):
        super().__init__(spec, ctx)
        self.train_file = spec.train_file or ctx.train_file
        if not self.train_file:
            raise InvalidRequest(f"strategy {self.name} needs a train_file to draw examples "
                                 "from", param="train_file")
        self.k = spec.k or 3

    def prompt(self, case):
        from afinar.rag.embeddings import get_embedder

        shots, vecs = self.ctx.pool(self.train_file)
        q = np.asarray(get_embedder().encode([case.question])[0], dtype=np.float32)
        order = np.argsort(-(vecs @ q), kind="stable")
        # never show the test question itself (a leaked duplicate would be a free answer)
        chosen = [shots[i] for i in order if shots[i][0].strip() != case.question.strip()]
        chosen = chosen[: self.k][::-1]  # the most similar example last, next to the question
        return with_examples(self.base_messages(case), chosen), None


@STRATEGIES.register("rag")
class Rag(Strategy):
    uses_kb = True


class _Tuned(Strategy):
    fine_tuned = True

    def __init__(self, spec, ctx):
        if not spec.model:
            raise InvalidRequest(f"strategy {spec.name or spec.type} needs a fine-tuned model "
                                 "(model, models or jobs)", param="model")
        super().__init__(spec, ctx)
        self.name = spec.name or f"{self.type}[{short_model(spec.model)}]"


@STRATEGIES.register("fine_tuned")
class FineTuned(_Tuned):
    pass


@STRATEGIES.register("fine_tuned_rag")
class FineTunedRag(_Tuned):
    uses_kb = True


def short_model(model_id: str) -> str:
    """``ft:base:afinar:suffix:abcd1234`` -> ``suffix:abcd1234`` (checkpoints keep their step)."""
    parts = model_id.split(":")
    return ":".join(parts[3:]) if model_id.startswith("ft:") and len(parts) > 4 else model_id


def expand(specs: list[StrategySpec]) -> list[StrategySpec]:
    """One spec per model: ``models`` and ``jobs`` (their fine-tuned models) become columns."""
    from afinar.tuning.jobs import Jobs

    out: list[StrategySpec] = []
    for s in specs:
        cls = STRATEGIES.get(s.type)
        models = list(s.models)
        for job_id in s.jobs:
            job = Jobs().get(job_id)
            if not job.fine_tuned_model:
                raise InvalidRequest(f"job {job_id} has no fine-tuned model (status "
                                     f"{job.status})", param="jobs")
            models.append(job.fine_tuned_model)
        if not models:
            out.append(s)
            continue
        if not cls.fine_tuned:
            raise InvalidRequest(f"strategy {s.type} takes one model, not models/jobs",
                                 param="strategies")
        for m in models:
            out.append(s.model_copy(update={"model": m, "models": [], "jobs": [],
                                            "name": s.name if len(models) == 1 else None}))
    names = [s.name or (f"{s.type}[{short_model(s.model)}]" if STRATEGIES.get(s.type).fine_tuned
                        and s.model else s.type) for s in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise InvalidRequest(f"two strategies are named {sorted(dup)[0]!r}: give them names",
                             param="strategies")
    return out


def build(spec: StrategySpec, ctx: Context) -> Strategy:
    return STRATEGIES.get(spec.type)(spec, ctx)
