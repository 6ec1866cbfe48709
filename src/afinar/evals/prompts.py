"""How each strategy lays out its prompt. Kept apart so the data a model is fine-tuned on can use
exactly the layout the evaluation will show it (``examples/support/make_data.py`` imports it;
``afinar data synth --style raft`` builds its prompts with the same ``with_sources``).

A ``rag`` prompt keeps the test's own messages and appends the retrieved sources to the system
message: the user's turn is the same one the base, few-shot and fine-tuned strategies see, so
what RAG adds to a prompt is measurable as the extra tokens of the system message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# The prompt with sources lives in rag.layouts, below the evaluation and the synthetic data
# made from knowledge bases (rag.synth): one function for both, re-exported here.
from afinar.rag.layouts import RAG_INSTRUCTIONS, with_sources

__all__ = ["RAG_INSTRUCTIONS", "with_examples", "with_sources"]


def with_examples(messages: Sequence[dict[str, Any]],
                  shots: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """``messages`` with ``shots`` ((user, assistant) pairs) as earlier turns of the conversation,
    after the system message: the chat-native few-shot layout."""
    out = [dict(m) for m in messages]
    at = 1 if out and out[0].get("role") in ("system", "developer") else 0
    turns = [t for u, a in shots for t in ({"role": "user", "content": u},
                                           {"role": "assistant", "content": a})]
    return out[:at] + turns + out[at:]
