"""The retrieval query of a follow-up question: "And how do I reset it?" searched alone finds
nothing about the router the conversation is about.

``standalone_query(messages, lm)`` returns the last user question when it stands on its own, and
otherwise a rewrite of it from the conversation:

1. Self-contained: no earlier user turn, or the question names things (at least four content
   words) and has no word that points back (it, that, they, there, the same, also, ...).
2. Otherwise the chat model condenses the conversation and the question into one question
   (greedy, at most 48 tokens). A rewrite is kept only when it is one line, at most three times
   the question's length, keeps most of the question's content words and adds at least one
   from the conversation: small models often answer the question or repeat it instead.
3. Otherwise (no model given, or the rewrite was refused), the previous user question and the
   last one together: a hybrid search over both finds what the conversation is about, which is
   what the rewrite is for. Measured on the embedded SmolLM2-135M, step 2 is usually refused
   (it answers or repeats), so step 3 is the common path with that model.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from afinar.models.generation import Generator, SamplingParams
from afinar.models.loader import LoadedModel

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
_BACK = set("""it its it's itself they them their theirs that those this these there then
he she him her his hers one ones same also too either former latter above previous""".split())
_STOP = set("""a an the and or but of to in on for with is are was were be been being do does
did can could should would will shall may might must how what which who whom whose why when
where i you we my your our me us about from by at as into if so than not no yes please tell
know want need get""".split())
PROMPT = ("Rewrite the user's last question so that it can be understood without the "
          "conversation: replace words such as it, they, that or there with what they refer to. "
          "Reply with the rewritten question only.")


def _content(text: str) -> list[str]:
    return [w for w in (x.lower() for x in _WORD.findall(text)) if w not in _STOP
            and w not in _BACK]


def self_contained(question: str) -> bool:
    words = [w.lower() for w in _WORD.findall(question)]
    return len(_content(question)) >= 4 and not any(w in _BACK for w in words)


def acceptable(rewrite: str, question: str, history: str) -> bool:
    """A rewrite that still asks the question and brings in what it refers to."""
    text = rewrite.strip()
    if not text or "\n" in text or len(text) > 3 * max(len(question), 40):
        return False
    got, asked = set(_content(text)), set(_content(question))
    kept = not asked or len(got & asked) >= max(1, round(0.5 * len(asked)))
    added = got & (set(_content(history)) - asked)
    return kept and bool(added)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def standalone_query(messages: list[dict[str, Any]],
                     lm: LoadedModel | Callable[[], LoadedModel] | None = None) -> str:
    """The query to search for the conversation's last user message (see the module doc).
    ``lm`` may be a function that loads the model: it is called only when a rewrite is needed."""
    turns = [(m.get("role"), _text(m.get("content"))) for m in messages]
    users = [i for i, (role, text) in enumerate(turns) if role == "user" and text.strip()]
    if not users:
        return ""
    question = turns[users[-1]][1].strip()
    if len(users) == 1 or self_contained(question):
        return question
    history = "\n".join(f"{'User' if role == 'user' else 'Assistant'}: {text.strip()}"
                        for role, text in turns[:users[-1]]
                        if role in ("user", "assistant") and text.strip())
    if lm is not None:
        lm = lm if isinstance(lm, LoadedModel) else lm()
        msgs = [{"role": "system", "content": PROMPT},
                {"role": "user", "content": f"Conversation:\n{history}\n\nLast question: "
                                            f"{question}\n\nRewritten question:"}]
        r = Generator(lm).chat(msgs, SamplingParams(temperature=0, max_tokens=48))
        rewrite = r.text.strip().strip('"')
        if acceptable(rewrite, question, history):
            return rewrite
    return f"{turns[users[-2]][1].strip()} {question}"
