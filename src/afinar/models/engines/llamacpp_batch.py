"""llama.cpp's backend for the batch scheduler (``models/batching.py``): concurrent requests on
one llama.cpp context decoded as several sequences of one ``llama_batch``.

The context is made with ``n_seq_max = max_batch`` and ``kv_unified = False`` (each sequence has
KV cells of its own, the model's whole context each: ``n_ctx = context * max_batch``). A request
takes a free sequence id; its prompt is decoded on that id (positions from 0, logits on its last
token; prompts longer than ``n_batch`` go in several decodes); each later step puts one token per
live sequence in one batch (``pos`` = that sequence's own length, logits on) and samples each
sequence at its row ``i`` of the batch. A request that ends frees its cells
(``llama_memory_seq_rm(seq, -1, -1)``) and its id for the next one. Only the scheduler's thread
touches the context (``llama_decode`` is not thread-safe per context), under the model's lock.

Sampling per request, as on the solo path (``LlamaCppModel.generate``): greedy without logits
processors is a numpy argmax over a view of row ``i``; sampling without processors is a llama.cpp
sampler chain of the request's own (temperature, top-k, top-p, min-p, then a draw seeded from the
request's seeded generator, the value the solo path draws from ``torch.manual_seed(seed)``);
with processors (penalties, JSON) the row is copied into a tensor and goes through
``batching.choose`` (transformers' processors, warpers and ``torch.multinomial``).
"""

from __future__ import annotations

from typing import Any

from afinar.models.batching import Backend, BatchRequest, choose
from afinar.models.gguf import EngineUnavailable


class LlamaBackend(Backend):
    def __init__(self, model: Any, max_batch: int):
        import llama_cpp

        self.lib, self.model = llama_cpp, model
        self.free = list(range(max_batch))  # sequence ids not in use
        self.chains: dict[int, Any] = {}  # sequence id -> its sampler chain

    @property
    def ctx(self):
        return self.model.llama._ctx.ctx

    def _submit(self, items: list[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of (token, position, sequence, logits?) entries."""
        b = self.model._batch
        b.n_tokens = len(items)
        for j, (tok, pos, seq, logits) in enumerate(items):
            b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = tok, pos, 1, logits
            b.seq_id[j][0] = seq
        rc = self.lib.llama_decode(self.ctx, b)
        if rc != 0:
            raise EngineUnavailable(f"llama.cpp could not decode a batch of {len(items)} "
                                    f"tokens (llama_decode rc={rc})")

    def prefill(self, req: BatchRequest) -> int:
        if not self.free:
            raise RuntimeError("no free llama.cpp sequence (more requests than max_batch)")
        seq = self.free.pop(0)
        req.state = seq
        self.lib.llama_memory_seq_rm(self.lib.llama_get_memory(self.ctx), seq, -1, -1)
        n, step = len(req.prompt), self.model.n_batch
        for i in range(0, n, step):
            chunk = req.prompt[i:i + step]
            self._submit([(t, i + j, seq, i + j == n - 1) for j, t in enumerate(chunk)])
        return (n - 1) % step  # the last token's row in the last batch

    def decode(self, reqs: list[BatchRequest]) -> list[int]:
        if len(reqs) > self.model.n_batch:
            raise RuntimeError("a batch larger than llama.cpp's n_batch")
        self._submit([(r.ids[-1], len(r.ids) - 1, r.state, True) for r in reqs])
        return list(range(len(reqs)))

    def _row(self, i: int):
        import numpy as np

        ptr = self.lib.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))

    def sample(self, req: BatchRequest, i: int) -> int:
        import torch

        if req.processors:
            return choose(req, torch.from_numpy(self._row(i).copy())[None])
        if not req.do_sample:
            return int(self._row(i).argmax())
        chain = self.chains.get(req.state)
        if chain is None:
            p = req.params
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=req.generator))
            chain = self.chains[req.state] = self.model._sampler(
                p.temperature, p.top_p, seed, top_k=p.top_k, min_p=p.min_p)
        return int(self.lib.llama_sampler_sample(chain, self.ctx, i))

    def release(self, req: BatchRequest) -> None:
        seq = req.state
        if (chain := self.chains.pop(seq, None)) is not None:
            self.lib.llama_sampler_free(chain)
        self.lib.llama_memory_seq_rm(self.lib.llama_get_memory(self.ctx), seq, -1, -1)
        self.free.append(seq)

    def reset(self) -> None:
        for chain in self.chains.values():
            self.lib.llama_sampler_free(chain)
        self.chains.clear()
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        self.free = list(range(self.model.max_batch))


__all__ = ["LlamaBackend"]
