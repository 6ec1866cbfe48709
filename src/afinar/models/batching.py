"""Continuous batching: concurrent requests on one model decoded together, one forward a step.

A ``Scheduler`` is one thread that owns a model while it has work (every step runs under the
model's ``lock``, so ``LoadedModel.use()`` callers and adapter loads interleave between steps).
``GenerationStream`` hands it a ``BatchRequest`` (prompt, budget, end-of-turn ids, the request's
own logits processors, warpers and seeded ``torch.Generator``) and reads token ids back from the
request's queue, exactly as it reads them from ``generate``'s streamer on the solo path; so stop
strings, streaming and usage stay in ``generation.py`` and neither the server nor the CLI
changes.

Each pass of the loop: drop requests whose consumer went away (a stop string matched, a client
disconnected), admit waiting requests up to ``max_batch`` (first come, first served; only those
of the running group: a group is one adapter on shared base weights, so a batch never mixes
adapters and a waiting request of another group stops further admissions until the batch
drains), prefill each new one alone (its first token comes from that forward), then decode one
token for every other live request in one forward. A request leaves the moment it ends (end of
turn, ``max_tokens``, cancel), and another joins at the next step.

Sampling is per request, in transformers' order (its processors: repetition penalty, then the
OpenAI penalties and the JSON constraint; then, when sampling, temperature, top-k, top-p, min-p;
argmax or ``torch.multinomial`` with the request's generator), so a seed gives the text a solo
``generate`` gives after ``torch.manual_seed(seed)``.

``TorchBackend`` is the transformers engine's backend: each new request is prefilled into a
``DynamicCache`` of its own (the same forward as a solo ``generate``), then merged into the
batch's cache left-padded to the longest row, with a 2-D attention mask marking the padding and
explicit position ids per row (each row's own count of tokens). A row that leaves is cut out of
every layer, and padding columns no row needs any more are trimmed. Models whose cache is not a
plain ``DynamicCache`` of ``DynamicLayer``s (sliding windows, recurrent states) are decoded one
request at a time by the same loop. llama.cpp's backend is in ``engines/llamacpp_batch.py``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class BatchRequest:
    """One generation inside a batch: what the scheduler needs, and the queue it answers on
    (token ids, then ``None``; ``error`` set before the ``None`` when it failed)."""

    def __init__(self, prompt: list[int], max_new: int, eos: set[int], *, processors: list,
                 warpers: list, do_sample: bool, seed: int, group: Any = None,
                 activate: Callable[[], None] | None = None,
                 cancel: threading.Event | None = None, params: Any = None):
        import torch

        self.prompt, self.max_new, self.eos = list(prompt), max_new, set(eos)
        self.processors, self.warpers, self.do_sample = processors, warpers, do_sample
        self.seed, self.group, self.activate = seed, group, activate
        self.params = params  # the request's SamplingParams (a backend's own sampler reads them)
        self.ids = list(prompt)  # prompt + generated: what the processors read
        self.generated = 0
        # the same stream as torch.manual_seed(seed) gives the solo path's global generator
        self.generator = torch.Generator().manual_seed(seed) if do_sample else None
        self.out: queue.Queue = queue.Queue()
        self.cancel = cancel or threading.Event()
        self.finished = threading.Event()  # set once the scheduler let go of it
        self.error: BaseException | None = None
        self.state: Any = None  # the backend's (a cache row, a llama.cpp sequence id)

    @property
    def needs_scores(self) -> bool:
        """Whether choosing a token needs the logits as a tensor (not a bare argmax)."""
        return bool(self.processors) or self.do_sample


def choose(req: BatchRequest, logits) -> int:
    """The next token from one row of logits ([1, vocab]), as ``generate`` picks it."""
    import torch

    scores = logits.to(dtype=torch.float32)
    if req.processors or (req.do_sample and req.warpers):
        ids = torch.tensor([req.ids], device=scores.device)
        for p in req.processors:
            scores = p(ids, scores)
        if req.do_sample:
            for w in req.warpers:
                scores = w(ids, scores)
    if not req.do_sample:
        return int(torch.argmax(scores, dim=-1)[0])
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs.cpu(), num_samples=1, generator=req.generator)[0, 0])


class Backend:
    """What an engine does for the scheduler; every call runs in the scheduler thread, under the
    model's lock. ``prefill`` and ``decode`` return, per request, a handle ``sample`` turns
    into a token (default: a row of logits, chosen by ``choose``)."""

    batchable = True  # False: the loop decodes one request at a time

    def prefill(self, req: BatchRequest) -> Any:
        raise NotImplementedError

    def decode(self, reqs: list[BatchRequest]) -> list[Any]:
        """One token for each of ``reqs`` (each has sampled at least one): its last id goes in."""
        raise NotImplementedError

    def sample(self, req: BatchRequest, handle: Any) -> int:
        return choose(req, handle)

    def release(self, req: BatchRequest) -> None:
        """``req`` left the batch (ended, cancelled or failed)."""

    def reset(self) -> None:
        """Drop every request's state (after a failed step)."""


class Scheduler:
    """One thread per model that decodes its concurrent requests together (see the module)."""

    def __init__(self, backend: Backend, lock: threading.Lock, max_batch: int):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.backend, self.lock = backend, lock
        self.max_batch = max_batch if backend.batchable else 1
        self._cv = threading.Condition()
        self._pending: deque[BatchRequest] = deque()
        self._running = False
        self.steps = 0  # decode forwards run (for tests and benchmarks)
        self.widest = 0  # the most requests one decode forward carried

    def submit(self, req: BatchRequest) -> None:
        with self._cv:
            self._pending.append(req)
            if not self._running:  # the thread lives while there is work (no idle thread
                self._running = True  # holding a model the cache has dropped)
                threading.Thread(target=self._loop, name="afinar-batch", daemon=True).start()

    # the loop ---------------------------------------------------------------------------

    def _admit(self, live: list[BatchRequest]) -> list[BatchRequest] | None:
        """Requests joining now (``None``: nothing left to do, the thread ends)."""
        with self._cv:
            for r in [r for r in self._pending if r.cancel.is_set()]:
                self._pending.remove(r)
                self._end(r)
            if not live and not self._pending:
                self._running = False
                return None
            group = live[0].group if live else self._pending[0].group
            new = []
            while (self._pending and len(live) + len(new) < self.max_batch
                   and self._pending[0].group == group):
                new.append(self._pending.popleft())
            return new

    def _loop(self) -> None:
        import torch

        live: list[BatchRequest] = []
        with torch.inference_mode():
            while (new := self._admit(live)) is not None:
                done = [r for r in live if r.cancel.is_set()]
                live = [r for r in live if not r.cancel.is_set()]
                with self.lock:
                    for r in done:
                        self._release(r)
                    if live or new:
                        (live or new)[0].activate and (live or new)[0].activate()
                    if live:
                        done += self._decode(live)
                    for r in new:
                        done += self._prefill(r)
                    live = [r for r in live + new if r not in done]
                for r in done:  # after the lock: a finished stream finds the model free
                    self._end(r)
                time.sleep(0)  # hand the GIL (and the lock) to a thread waiting between steps

    def _prefill(self, req: BatchRequest) -> list[BatchRequest]:
        try:
            tok = self.backend.sample(req, self.backend.prefill(req))
        except Exception as e:  # noqa: BLE001  handed to that request's consumer
            req.error = e
            self._release(req)
            return [req]
        return self._emit(req, tok)

    def _decode(self, live: list[BatchRequest]) -> list[BatchRequest]:
        self.steps += 1
        self.widest = max(self.widest, len(live))
        try:
            handles = self.backend.decode(live)
        except Exception as e:  # noqa: BLE001  the batch's state is gone: every request fails
            for r in live:
                r.error = e
            self.backend.reset()
            return list(live)
        done = []
        for r, h in zip(live, handles):
            try:
                tok = self.backend.sample(r, h)
            except Exception as e:  # noqa: BLE001  e.g. a JSON constraint with no token left
                r.error = e
                self._release(r)
                done.append(r)
                continue
            done += self._emit(r, tok)
        return done

    def _emit(self, req: BatchRequest, tok: int) -> list[BatchRequest]:
        req.ids.append(tok)
        req.generated += 1
        req.out.put(tok)
        if tok in req.eos or req.generated >= req.max_new:
            self._release(req)
            return [req]
        return []

    def _release(self, req: BatchRequest) -> None:
        if req.state is not None:
            try:
                self.backend.release(req)
            except Exception as e:  # noqa: BLE001  its text is whole; say what failed
                req.error = req.error or e
        req.state = None

    @staticmethod
    def _end(req: BatchRequest) -> None:
        req.out.put(None)
        req.finished.set()


class TorchBackend(Backend):
    """A transformers causal LM's batched decode over one shared ``DynamicCache`` (see the
    module): rows left-padded, a 2-D attention mask, explicit position ids."""

    def __init__(self, model: Any, device: str):
        self.model, self.device = model, device
        self.rows: list[BatchRequest] = []  # the cache's rows, in order
        self.cache: Any = None
        self.mask: Any = None  # [rows, columns] long, 0 on padding
        self.batchable = self._plain_cache()

    def _plain_cache(self) -> bool:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        try:
            cache = DynamicCache(config=self.model.config)
        except Exception:  # noqa: BLE001  a model whose config the cache cannot read
            return False
        return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)

    def prefill(self, req: BatchRequest) -> Any:
        import torch
        from transformers import DynamicCache

        ids = torch.tensor([req.prompt], device=self.device)
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                         past_key_values=DynamicCache(config=self.model.config), use_cache=True,
                         logits_to_keep=1)
        req.state = ("solo", out.past_key_values)
        return out.logits[:, -1, :]

    def decode(self, reqs: list[BatchRequest]) -> list[Any]:
        import torch

        self._sync(reqs)
        b = len(reqs)
        self.mask = torch.cat([self.mask, self.mask.new_ones((b, 1))], dim=1)
        out = self.model(
            input_ids=torch.tensor([[r.ids[-1]] for r in reqs], device=self.device),
            attention_mask=self.mask,
            position_ids=torch.tensor([[len(r.ids) - 1] for r in reqs], device=self.device),
            past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        logits = out.logits[:, -1, :]
        return [logits[i:i + 1] for i in range(b)]

    def _layers(self):
        return self.cache.layers

    def _sync(self, reqs: list[BatchRequest]) -> None:
        """Make the cache's rows ``reqs``, in that order: cut rows gone, merge new ones."""
        import torch
        import torch.nn.functional as F

        keep = [i for i, r in enumerate(self.rows) if r in reqs]
        if self.rows and len(keep) < len(self.rows):
            if not keep:
                self.reset()
            else:
                idx = torch.tensor(keep, device=self.mask.device)
                for layer in self._layers():
                    layer.keys, layer.values = layer.keys[idx], layer.values[idx]
                self.mask = self.mask[idx]
                self.rows = [self.rows[i] for i in keep]
                start = int(self.mask.any(dim=0).nonzero()[0])  # columns of padding only
                if start:
                    for layer in self._layers():
                        layer.keys = layer.keys[:, :, start:]
                        layer.values = layer.values[:, :, start:]
                    self.mask = self.mask[:, start:]
        joining = [r for r in reqs if r not in self.rows]
        for r in joining:
            solo = r.state[1]
            n = solo.layers[0].keys.shape[2]
            if self.cache is None:
                self.cache, self.mask = solo, torch.ones((1, n), dtype=torch.long,
                                                         device=solo.layers[0].keys.device)
            else:
                width = self.mask.shape[1]
                grow, pad = max(0, n - width), max(0, width - n)
                for mine, theirs in zip(self._layers(), solo.layers):
                    mine.keys = torch.cat([F.pad(mine.keys, (0, 0, grow, 0)),
                                           F.pad(theirs.keys, (0, 0, pad, 0))])
                    mine.values = torch.cat([F.pad(mine.values, (0, 0, grow, 0)),
                                             F.pad(theirs.values, (0, 0, pad, 0))])
                row = torch.cat([self.mask.new_zeros((1, pad)), self.mask.new_ones((1, n))], 1)
                self.mask = torch.cat([F.pad(self.mask, (grow, 0)), row])
            self.rows.append(r)
            r.state = ("row",)
        if [id(r) for r in self.rows] != [id(r) for r in reqs]:  # same set, other order
            order = torch.tensor([self.rows.index(r) for r in reqs], device=self.mask.device)
            for layer in self._layers():
                layer.keys, layer.values = layer.keys[order], layer.values[order]
            self.mask, self.rows = self.mask[order], list(reqs)

    def release(self, req: BatchRequest) -> None:
        pass  # its row is cut at the next decode (_sync), with any other row that left

    def reset(self) -> None:
        self.rows, self.cache, self.mask = [], None, None


def torch_scheduler(model: Any, device: str, lock: threading.Lock, max_batch: int
                    ) -> Scheduler | None:
    """The transformers engine's scheduler for a loaded model, or ``None`` where its forward is
    not a plain causal LM's (a prompt-tuned ``PeftModel`` prepends virtual tokens: it keeps
    the solo ``generate`` path) or ``max_batch`` is 1 (one request at a time, as before)."""
    from transformers import PreTrainedModel

    if max_batch <= 1 or not isinstance(model, PreTrainedModel):
        return None
    return Scheduler(TorchBackend(model, device), lock, max_batch)


__all__ = ["Backend", "BatchRequest", "Scheduler", "TorchBackend", "choose", "torch_scheduler"]
