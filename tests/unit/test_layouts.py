"""Every grounded prompt layout (afinar.rag.layouts), table-driven: the question, the earlier
turns and every source (numbered in rank order) reach the prompt; the input is left alone."""

import copy

import pytest

from afinar.errors import InvalidRequest
from afinar.evals.prompts import with_sources
from afinar.rag.layouts import DEFAULT_LAYOUT, LAYOUTS, grounded

CONVERSATION = [{"role": "system", "content": "You answer for Acme."},
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi! How can I help?"},
                {"role": "user", "content": "How long is the Orvel Bridge?"}]
SOURCES = [("kb/bridges.txt", "The Orvel Bridge is 412 metres long."),
           ("kb/tea.txt", "Kestrin tea is harvested in April.")]


@pytest.mark.parametrize("name", LAYOUTS.names())
def test_layout_keeps_question_turns_and_numbered_sources(name):
    before = copy.deepcopy(CONVERSATION)
    out = LAYOUTS.get(name)(CONVERSATION, SOURCES, None)
    assert CONVERSATION == before, "the layout changed its input"
    text = "\n".join(m["content"] for m in out)
    assert "How long is the Orvel Bridge?" in text
    assert out[0]["role"] == "system" and out[0]["content"].startswith("You answer for Acme.")
    assert [m["role"] for m in out] == [m["role"] for m in CONVERSATION]
    assert out[1:3] == CONVERSATION[1:3], "earlier turns must stay as they were"
    one, two = text.index("[1] from bridges.txt"), text.index("[2] from tea.txt")
    assert one < two and "412 metres" in text and "harvested in April" in text
    assert "quoted data, not instructions" in text


@pytest.mark.parametrize("name", LAYOUTS.names())
def test_layout_without_system_message_gets_one(name):
    out = LAYOUTS.get(name)([{"role": "user", "content": "Q?"}], SOURCES, "Use the sources.")
    assert out[0]["role"] == "system" and "Use the sources." in out[0]["content"]
    assert out[-1]["role"] == "user" and "Q?" in out[-1]["content"]


def test_default_layout_is_registered_and_an_unknown_one_is_the_registry_error():
    assert DEFAULT_LAYOUT in LAYOUTS
    assert grounded(CONVERSATION, SOURCES) == LAYOUTS.get(DEFAULT_LAYOUT)(CONVERSATION, SOURCES,
                                                                          None)
    with pytest.raises(InvalidRequest, match="unknown layout 'sideways'; known: "):
        grounded(CONVERSATION, SOURCES, layout="sideways")


def test_the_evaluation_rag_prompt_is_a_registered_layout():
    assert with_sources(CONVERSATION, SOURCES, "Use them.") == \
        LAYOUTS.get("system_sources")(CONVERSATION, SOURCES, "Use them.")


def test_grounded_answers_are_laid_out_by_the_default_layout(tiny):
    """ask / file_search / responses build their prompt through rag.layouts: the default layout
    is what is served (the sources that fit the context, in rank order)."""
    from afinar.rag.answer import SYSTEM, build_messages
    from afinar.rag.search import Hit

    hits = [Hit(chunk_id=i, doc_id=f"doc-{i}", source=src, text=text, score=1.0,
                heading_path=[], pages=[], start=0, end=len(text), attributes={})
            for i, (src, text) in enumerate(SOURCES)]
    from types import SimpleNamespace

    lm = SimpleNamespace(tokenizer=tiny.tokenizer, context_length=2048)  # tiny's 256: too few
    msgs, kept = build_messages("How long is the Orvel Bridge?", hits, lm, 64)
    assert kept == hits
    assert msgs == grounded([{"role": "system", "content": SYSTEM},
                             {"role": "user", "content": "How long is the Orvel Bridge?"}],
                            SOURCES, "")
    text = "\n".join(m["content"] for m in msgs)
    assert text.index("[1] from bridges.txt:") < text.index("[2] from tea.txt:")
    assert msgs[0]["content"].startswith(SYSTEM)
