"""Optional reranking of retrieved chunks, behind one small interface.

``CrossEncoderReranker`` scores (query, chunk) pairs with a sentence-transformers cross-encoder
folder (any local one; none ships with afinar, since no wheel carries one).
``OverlapReranker`` needs no model: it orders by the share of the query's content words that the
chunk contains, a cheap tie-breaker for keyword-heavy queries.
``LLMReranker`` (the zero-download default) asks the configured chat model, through its chat
template, whether each passage answers the question, and scores P(yes) / (P(yes) + P(no)) from
the logits of the first generated position; all passages go in one left-padded forward pass.

Names (``get_reranker``): ``llm`` or ``llm:MODEL``, ``cross-encoder:PATH``, ``overlap``. A
reranker is a class in ``RERANKERS`` (plugins: the entry point group ``afinar.rerankers``); a
name ``KIND:ARG`` looks up ``KIND`` and passes ``ARG`` as the class's ``argument`` keyword.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Protocol

from afinar.errors import InvalidRequest
from afinar.registry import Registry

if TYPE_CHECKING:
    from afinar.rag.search import Hit

RERANK_QUESTION = "Does the passage answer the question? Answer yes or no."
_cache = None  # the ModelCache the llm reranker loads through (made on first use)


class Reranker(Protocol):
    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]: ...


def _kind(name: str) -> str:
    return name.strip().partition(":")[0]


# A class registered here may set ``argument`` (the keyword a name's ":ARG" fills, e.g.
# "model"), ``argument_required``, ``usage`` (how its names are written, for help and errors)
# and ``takes_lm`` (it can use an already loaded chat model, ``lm=``).
RERANKERS: Registry[type] = Registry("reranker", "afinar.rerankers", param="reranker",
                                     normalize=_kind)


@RERANKERS.register("overlap")
class OverlapReranker:
    usage = "overlap"

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        from afinar.rag.answer import content_words

        q = content_words(query)
        scored = [(len(q & content_words(h.text)) / max(len(q), 1), i, h)
                  for i, h in enumerate(hits)]
        scored.sort(key=lambda t: (-t[0], t[1]))
        return [replace(h, score=s, score_kind="rerank") for s, _, h in scored]


@RERANKERS.register("cross-encoder")
class CrossEncoderReranker:
    argument, argument_required, usage = "model_path", True, "cross-encoder:PATH"

    def __init__(self, model_path: str, device: str | None = None):
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(model_path, device=device, local_files_only=True)

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        if not hits:
            return hits
        import numpy as np

        raw = np.asarray(self.model.predict([(query, h.text) for h in hits]), dtype=float)
        probs = 1 / (1 + np.exp(-raw)) if raw.min() < 0 or raw.max() > 1 else raw
        order = sorted(range(len(hits)), key=lambda i: (-probs[i], i))
        return [replace(hits[i], score=float(probs[i]), score_kind="rerank") for i in order]


def yes_no_scores(logits, yes_ids: list[int], no_ids: list[int]) -> list[float]:
    """P(yes) / (P(yes) + P(no)) per row of next-token ``logits`` (batch x vocab); each side's
    probability sums its token variants ("yes", "Yes", ...)."""
    import torch

    logits = logits.float()
    yes = torch.logsumexp(logits[:, yes_ids], dim=-1)
    no = torch.logsumexp(logits[:, no_ids], dim=-1)
    return torch.sigmoid(yes - no).tolist()


def _first_ids(tokenizer, words: list[str]) -> list[int]:
    ids = {tokenizer.encode(w, add_special_tokens=False)[0] for w in words
           if tokenizer.encode(w, add_special_tokens=False)}
    return sorted(ids)


@RERANKERS.register("llm")
class LLMReranker:
    """Pointwise relevance from a chat model's next-token probabilities of yes / no."""

    argument, usage, takes_lm = "model", "llm, llm:MODEL", True

    def __init__(self, model: str | None = None, lm: Any = None, max_passage_tokens: int = 384):
        global _cache
        if lm is None:
            from afinar.models import ModelCache
            from afinar.settings import get_settings

            if _cache is None:
                _cache = ModelCache(max_models=1)
            lm = _cache.get(model or get_settings().default_model)
        self.lm, self.max_passage_tokens = lm, max_passage_tokens
        tok = lm.tokenizer
        self.yes_ids = _first_ids(tok, ["yes", "Yes", " yes", " Yes"])
        self.no_ids = _first_ids(tok, ["no", "No", " no", " No"])

    def prompt_ids(self, query: str, passage: str) -> list[int]:
        from afinar.models.templates import prepare_messages

        tok = self.lm.tokenizer
        ids = tok.encode(passage, add_special_tokens=False)[: self.max_passage_tokens]
        passage = tok.decode(ids)
        msgs, _ = prepare_messages(tok, [{"role": "user", "content": (
            f"Question: {query}\n\nPassage: {passage}\n\n{RERANK_QUESTION}")}])
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return tok.encode(text, add_special_tokens=False)[-self.lm.context_length:]

    def scores(self, query: str, passages: list[str]) -> list[float]:
        import torch

        if not passages:
            return []
        rows = [self.prompt_ids(query, p) for p in passages]
        width = max(len(r) for r in rows)
        tok = self.lm.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with self.lm.use() as model, torch.inference_mode():
            dev = next(model.parameters()).device
            out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                        position_ids=pos.to(dev))
        return yes_no_scores(out.logits[:, -1, :], self.yes_ids, self.no_ids)

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        s = self.scores(query, [h.text for h in hits])
        order = sorted(range(len(hits)), key=lambda i: (-s[i], i))
        return [replace(hits[i], score=float(s[i]), score_kind="rerank") for i in order]


def usage() -> str:
    """How reranker names are written, for help: ``cross-encoder:PATH, llm, llm:MODEL, ...``."""
    return ", ".join(getattr(cls, "usage", name) for name, cls in RERANKERS.items())


def parse_name(name: str) -> tuple[str, str]:
    """(kind, argument) of a reranker name, or one clear error: an unknown kind is the
    registry's error naming the known ones."""
    if not isinstance(name, str):
        raise RERANKERS.unknown(name)
    cls = RERANKERS.get(name)
    kind, _, arg = name.strip().partition(":")
    takes = getattr(cls, "argument", None)
    if arg and takes is None:
        raise InvalidRequest(f"reranker {kind!r} takes no argument (got {name!r})",
                             param="reranker")
    if not arg and getattr(cls, "argument_required", False):
        raise InvalidRequest(f"reranker {kind!r} needs an argument: "
                             f"{getattr(cls, 'usage', kind + ':ARG')}", param="reranker")
    return kind, arg


def get_reranker(name: str, **kw) -> Reranker:
    """The reranker a name asks for: ``llm`` (the configured chat model, or ``lm=`` a loaded
    one), ``llm:MODEL``, ``cross-encoder:PATH`` (a local sentence-transformers folder) or
    ``overlap``."""
    kind, arg = parse_name(name)
    cls = RERANKERS.get(kind)
    if arg or not getattr(cls, "takes_lm", False):
        kw.pop("lm", None)
    if arg:
        kw[cls.argument] = arg
    try:
        return cls(**kw)
    except InvalidRequest:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise InvalidRequest(f"reranker {name!r} could not be loaded: {e}",
                             param="reranker") from None


OPENAI_RANKERS = ("none", "auto", "default-2024-11-15", "default_2024_08_21")


@functools.lru_cache(maxsize=4)
def cached_reranker(name: str) -> Reranker:
    """One loaded reranker per name, kept for later requests (the server's ``ranker``)."""
    return get_reranker(name)


def for_ranker(ranker: str | None, configured: str | None = None,
               load: Callable[[str], Any] | None = None) -> Reranker | None:
    """The reranker an API ``ranking_options.ranker`` asks for: OpenAI's ``auto`` and
    ``default-*`` mean ``configured`` (``AFINAR_RERANKER``; unset: none); ``none`` means none;
    afinar's names (``llm``, ``llm:MODEL``, ``cross-encoder:PATH``, ``overlap``) are an
    extension. ``load`` (model id -> loaded model, the server's model cache) gives ``llm`` the
    model already in memory instead of a second copy; other rerankers are kept by name."""
    if not ranker or ranker == "none":
        return None
    if ranker in OPENAI_RANKERS:
        ranker = (configured or "").strip()
        if not ranker or ranker == "none":
            return None
    kind, arg = parse_name(ranker)
    cls = RERANKERS.get(kind)
    if getattr(cls, "takes_lm", False) and load is not None:
        from afinar.settings import get_settings

        return cls(lm=load(arg or get_settings().default_model))
    return cached_reranker(ranker.strip())
