"""Text generation on a loaded causal LM: chat template, sampling, stop strings, seeds, streaming.

``Generator.stream`` returns a ``GenerationStream``: iterate it for text deltas as tokens arrive;
afterwards ``.result`` holds the full text, the finish reason and the token counts.
transformers' ``generate`` does the decoding (any architecture, KV cache, sampling); it runs in a
worker thread and hands token ids over a queue, the pattern of transformers' own
``TextIteratorStreamer``. What is written here is what ``generate`` lacks for an OpenAI-shaped
API: stop strings cut *before* the match and never leaked mid-stream, exact usage counts, and a
finish reason.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from afinar.errors import ContextLengthExceeded, InvalidRequest
from afinar.models.batching import BatchRequest
from afinar.models.constrained import JsonConstraint
from afinar.models.loader import LoadedModel
from afinar.models.sampling import GREEDY_BELOW, SAMPLING_DEFAULT_KEYS, SamplingParams
from afinar.models.templates import end_of_turn_ids, render_ids


@dataclass
class GenerationResult:
    text: str
    finish_reason: str  # stop | length
    prompt_tokens: int
    completion_tokens: int
    seed: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _penalty_processor(prompt_len: int, frequency: float, presence: float):
    """OpenAI's penalties: each logit drops by ``frequency * count + presence * (count > 0)``,
    counting the tokens generated so far (not the prompt). transformers' repetition_penalty is
    multiplicative and counts the prompt, so it is not the same thing."""
    import torch
    from transformers import LogitsProcessor

    class Penalty(LogitsProcessor):
        def __call__(self, input_ids, scores):
            gen = input_ids[:, prompt_len:]
            if gen.shape[1] == 0:
                return scores
            counts = torch.zeros_like(scores).scatter_add_(
                1, gen, torch.ones_like(gen, dtype=scores.dtype))
            return scores - frequency * counts - presence * (counts > 0).to(scores.dtype)

    return Penalty()


class _TokenQueue:
    """A transformers streamer: the first ``put`` is the prompt, then one token per step."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for t in value.reshape(-1).tolist():
            self.q.put(int(t))

    def end(self) -> None:
        self.q.put(None)


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters might be the start of a stop string (so not yet sendable)."""
    keep = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                keep = max(keep, k)
                break
    return keep


class GenerationStream:
    def __init__(self, lm: LoadedModel, prompt_ids: list[int], params: SamplingParams,
                 max_new: int, seed: int, constraint: JsonConstraint | None = None):
        self.lm, self.prompt_ids, self.params = lm, prompt_ids, params
        self.constraint = constraint
        self.max_new, self.seed = max_new, seed
        self.result: GenerationResult | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._streamer = _TokenQueue()
        self._eos = set(end_of_turn_ids(lm.tokenizer, lm.model.generation_config))

    def _processors(self) -> list:
        """The request's own logits processors (penalties, JSON), in the order ``generate``
        applies them after its repetition penalty."""
        p, processors = self.params, []
        if p.frequency_penalty or p.presence_penalty:
            processors.append(_penalty_processor(
                len(self.prompt_ids), p.frequency_penalty, p.presence_penalty))
        if self.constraint is not None:  # last: after penalties, before temperature/top_p
            processors.append(self.constraint.processor(len(self.prompt_ids)))
        return processors

    def _request(self) -> BatchRequest:
        """This generation for the model's batch scheduler, with the processors and warpers
        ``generate`` would build from the kwargs of ``_run``, in its order."""
        from transformers import (
            MinPLogitsWarper,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        p = self.params
        processors = self._processors()
        if p.repetition_penalty != 1.0:
            processors.insert(0, RepetitionPenaltyLogitsProcessor(p.repetition_penalty))
        do_sample, warpers = p.temperature >= GREEDY_BELOW, []
        if do_sample:
            if p.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(p.temperature))
            if p.top_k:
                warpers.append(TopKLogitsWarper(p.top_k))
            if p.top_p < 1.0:
                warpers.append(TopPLogitsWarper(p.top_p))
            if p.min_p:
                warpers.append(MinPLogitsWarper(p.min_p))
        return BatchRequest(self.prompt_ids, self.max_new, self._eos, processors=processors,
                            warpers=warpers, do_sample=do_sample, seed=self.seed,
                            group=self.lm.adapter, activate=self.lm.activate, cancel=self._stop,
                            params=p)

    def _run(self) -> None:
        """The solo path (no scheduler: ``max_batch`` 1, a prompt-tuned model): ``generate``
        under the model's lock, one request at a time."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        stop_event = self._stop

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), stop_event.is_set(), dtype=torch.bool)

        lm, p = self.lm, self.params
        try:
            ids = torch.tensor([self.prompt_ids], device=lm.device)
            kwargs: dict[str, Any] = dict(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new,
                eos_token_id=sorted(self._eos), pad_token_id=lm.tokenizer.pad_token_id
                if lm.tokenizer.pad_token_id is not None else sorted(self._eos)[0],
                streamer=self._streamer, stopping_criteria=StoppingCriteriaList([_Cancel()]),
            )
            if processors := self._processors():
                from transformers import LogitsProcessorList

                kwargs["logits_processor"] = LogitsProcessorList(processors)
            if p.repetition_penalty != 1.0:
                kwargs["repetition_penalty"] = p.repetition_penalty
            if p.temperature < GREEDY_BELOW:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            else:
                kwargs.update(do_sample=True, temperature=p.temperature, top_p=p.top_p,
                              top_k=p.top_k, min_p=p.min_p or None)
            # One generation at a time per model: the global torch RNG carries the seed.
            with lm.lock, torch.inference_mode():
                lm.activate()  # its adapter on shared base weights (models/adapters.py)
                torch.manual_seed(self.seed)
                lm.model.generate(**kwargs)
        except BaseException as e:  # handed to the consuming thread
            self._error = e
        finally:
            self._streamer.end()

    def __iter__(self) -> Iterator[str]:
        tok, stops = self.lm.tokenizer, self.params.stop
        batcher = getattr(self.lm, "batcher", None)
        if batcher is not None:  # decoded with the model's other requests (models/batching.py)
            req = self._request()
            tokens, wait = req.out, req.finished.wait
            batcher.submit(req)
        else:
            thread = threading.Thread(target=self._run, name="afinar-generate", daemon=True)
            thread.start()
            tokens, wait = self._streamer.q, thread.join
        ids: list[int] = []
        sent = 0  # characters of text already yielded
        finish, cut = "length", False
        text = ""
        try:
            while (t := tokens.get()) is not None:
                if self._stop.is_set():
                    continue  # drain what generate still emits after a stop
                ids.append(t)
                if t in self._eos:
                    finish = "stop"
                    self._stop.set()
                    continue
                text = tok.decode(ids, skip_special_tokens=True)
                at = min((i for s in stops if (i := text.find(s, max(0, sent - len(s)))) >= 0),
                         default=-1)
                if at >= 0:
                    text, finish, cut = text[:at], "stop", True
                    self._stop.set()
                    if at > sent:
                        yield text[sent:]
                        sent = at
                    continue
                if text.endswith("\ufffd"):
                    continue  # a multi-byte character is not complete yet
                ready = len(text) - _held_back(text, stops)
                if ready > sent:
                    yield text[sent:ready]
                    sent = ready
            if (error := self._error or (req.error if batcher is not None else None)):
                raise error
            if not cut and sent < len(text):
                yield text[sent:]  # a held-back prefix of a stop string that never completed
            self.result = GenerationResult(
                text=text, finish_reason=finish, prompt_tokens=len(self.prompt_ids),
                completion_tokens=len(ids), seed=self.seed,
            )
        finally:
            self._stop.set()
            wait()


class Generator:
    """Generation on one loaded model."""

    def __init__(self, lm: LoadedModel):
        self.lm = lm

    def prompt_ids(self, messages: list[dict[str, Any]], tools: list[dict] | None = None) -> list[int]:
        return render_ids(self.lm.tokenizer, messages, tools=tools)

    def _budget(self, n_prompt: int, params: SamplingParams) -> int:
        ctx = self.lm.context_length
        if n_prompt >= ctx:
            raise ContextLengthExceeded(
                f"this model's maximum context length is {ctx} tokens, but the prompt has "
                f"{n_prompt} tokens; shorten the messages", param="messages")
        room = ctx - n_prompt
        if params.max_tokens is None:
            return room
        if params.max_tokens > room:
            raise ContextLengthExceeded(
                f"this model's maximum context length is {ctx} tokens; the prompt has {n_prompt} "
                f"and max_tokens asks for {params.max_tokens} more (at most {room} fit)",
                param="max_tokens")
        return params.max_tokens

    def stream_ids(self, prompt_ids: list[int], params: SamplingParams | None = None) -> GenerationStream:
        params = params or SamplingParams()
        if not prompt_ids:
            raise InvalidRequest("empty prompt", param="messages")
        max_new = self._budget(len(prompt_ids), params)
        seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**31)
        constraint = None if params.json_schema is None else JsonConstraint(
            self.lm.tokenizer, params.json_schema,
            end_of_turn_ids(self.lm.tokenizer, self.lm.model.generation_config))
        return GenerationStream(self.lm, prompt_ids, params, max_new, seed, constraint)

    def stream(self, messages: list[dict[str, Any]], params: SamplingParams | None = None,
               tools: list[dict] | None = None, prefix: str = "") -> GenerationStream:
        """Chat: render ``messages`` with the model's template and stream the assistant's reply.

        ``prefix`` starts the reply with fixed text that the model continues (a forced format,
        e.g. the opening of a tool call); the stream yields only the continuation."""
        ids = self.prompt_ids(messages, tools)
        if prefix:
            ids += self.lm.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        return self.stream_ids(ids, params)

    def stream_text(self, prompt: str, params: SamplingParams | None = None) -> GenerationStream:
        """Plain completion of ``prompt`` (no chat template)."""
        ids = self.lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return self.stream_ids(list(ids), params)

    def chat(self, messages: list[dict[str, Any]], params: SamplingParams | None = None,
             tools: list[dict] | None = None, prefix: str = "") -> GenerationResult:
        s = self.stream(messages, params, tools, prefix)
        for _ in s:
            pass
        assert s.result is not None
        return s.result


__all__ = ["GREEDY_BELOW", "SAMPLING_DEFAULT_KEYS", "GenerationResult", "GenerationStream",
           "Generator", "SamplingParams"]
