"""Boilerplate out of the index, on the real Debian FAQ in its three formats: the question
"What is Debian GNU/Linux?" matches the tables of contents and section 1.3 word for word, yet
section 1.2, which answers it, must come first in every ranking mode (issue: tables of contents
at ranks 1 and 2 and the answer outside the top 5)."""

import pytest

from afinar.rag.kb import KnowledgeBases

pytestmark = pytest.mark.integration

QUESTION = "What is Debian GNU/Linux?"


@pytest.mark.parametrize("fmt", ["txt", "pdf", "html"])
def test_what_is_debian_finds_section_1_2_first(shared_dir, home, fmt):
    corpora = shared_dir / "corpora"
    paths = (sorted((corpora / "debian-faq-html").glob("*.html")) if fmt == "html"
             else [corpora / f"debian-faq.{fmt}"])
    kbs = KnowledgeBases()
    kbs.create("faq")
    report = kbs.add("faq", paths)
    assert not report.failed
    for mode in ("hybrid", "lexical", "dense"):
        hits = kbs.search("faq", QUESTION, k=5, mode=mode)
        top = hits[0].heading_path[-1]
        assert top.startswith("1.2") and top.endswith("What is Debian GNU/Linux?"), (mode, top)
        # no table of contents anywhere in the top 5
        assert not any(text.count("1.1") and text.count("1.3") and text.count("1.4")
                       for text in (h.text for h in hits)), mode
