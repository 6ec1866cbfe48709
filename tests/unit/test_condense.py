"""Follow-up questions are searched as standalone questions: "And how do I reset it?" after a
question about the X300 must retrieve the X300's page, not any page about resetting."""

from __future__ import annotations

import pytest

from afinar.rag.condense import acceptable, self_contained, standalone_query
from tests.unit.test_server_tuning_rag import server, upload  # noqa: F401 (fixture)

X300 = "# X300 router\n\nTo reset the X300 router, hold its pin hole button for 8 seconds.\n"
M2 = "# M2 modem\n\nThe M2 modem is reset from the mobile app, under Settings.\n"


@pytest.mark.parametrize("question, alone", [
    ("How do I reset the X300 router to factory settings?", True),
    ("And how do I reset it?", False),
    ("Does that also apply to the basic plan?", False),
    ("Where is it?", False),
    ("Price?", False),
])
def test_which_questions_stand_alone(question, alone):
    assert self_contained(question) is alone


def test_a_rewrite_must_keep_the_question_and_add_what_it_refers_to():
    history = "User: Which adapter does the X300 router need?\nAssistant: A 12 V one."
    q = "And how do I reset it?"
    assert acceptable("How do I reset the X300 router?", q, history)
    assert not acceptable("And how do I reset it?", q, history)  # repeated: nothing added
    assert not acceptable("The X300 needs a 12 V adapter.", q, history)  # answered instead
    assert not acceptable("How do I reset the X300?\nRewritten question:", q, history)
    assert not acceptable("", q, history)


def test_without_history_the_question_is_the_query():
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "And how do I reset it?"}]
    assert standalone_query(msgs) == "And how do I reset it?"
    assert standalone_query([{"role": "assistant", "content": "hi"}]) == ""


def test_a_follow_up_retrieves_what_the_conversation_is_about(server, tmp_path):  # noqa: F811
    _, _, client = server
    files = [upload(tmp_path, "x300.md", X300), upload(tmp_path, "m2.md", M2)]
    store = client.vector_stores.create(name="kb", file_ids=files)
    tool = {"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 1}
    turns = [{"role": "user", "content": "Which power adapter does the X300 router need?"},
             {"role": "assistant", "content": "A 12 V adapter."},
             {"role": "user", "content": "And how do I reset it?"}]
    resp = client.responses.create(model="tiny", input=turns, tools=[tool], temperature=0,
                                   include=["file_search_call.results"], max_output_tokens=4)
    call = resp.output[0]
    assert call.type == "file_search_call" and "X300" in call.queries[0]
    assert "reset it" in call.queries[0]  # the question itself is still asked
    assert call.results[0].filename == "x300.md"
    alone = client.responses.create(model="tiny", input=turns[-1:], tools=[tool],
                                    include=["file_search_call.results"], max_output_tokens=4)
    assert alone.output[0].queries == ["And how do I reset it?"]
