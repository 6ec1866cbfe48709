"""Generate the support example: a knowledge base of product pages plus ticket conversations.

The answers need two things the embedded model lacks: a format (JSON with a topic label and the
exact fact) and facts (warranty length, reset time, admin address, adapter voltage) that only the
product pages hold. Test tickets are about products the training tickets never mention, in
phrasings they never use, so a fine-tuned model can learn the format but not the facts.

Training conversations carry the sources a RAG prompt would show (retrieved from the knowledge
base with the evaluation's own layout, the right page forced in when retrieval missed it), so the
fine-tuned model learns to copy the fact from its sources.

    python examples/support/make_data.py      # writes kb/*.md, train.jsonl, test.jsonl
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
SYSTEM = ('You answer support tickets about Acme routers. Reply with JSON only: '
          '{"topic": "warranty|reset|setup|power", "answer": "<the exact fact>"}.')
TRAIN_PRODUCTS = ["X100", "X200", "M1", "C5", "P7"]
TEST_PRODUCTS = ["X300", "M2", "T10"]
KIND = {"X": "router", "M": "mesh system", "C": "cable modem", "T": "travel router",
        "P": "pro router"}
PHRASES = {  # the first four for training, the last two only in test tickets
    "warranty": ["How long is the warranty on my {p}?",
                 "Is my {p} still under warranty after a year? How long does it last?",
                 "What warranty period does the {p} have?",
                 "For how many months is the {p} covered by warranty?",
                 "I bought a {p} recently. How long is it covered?",
                 "What is the warranty length for the {p}?"],
    "reset": ["How long do I hold the reset button on the {p}?",
              "My {p} froze. How do I factory reset it?",
              "How many seconds do I press reset on a {p}?",
              "I need to restore the factory settings of my {p}.",
              "What is the reset procedure for the {p}?",
              "The {p} is stuck, how long should I press the reset button?"],
    "setup": ["What is the admin page address of the {p}?",
              "Which IP do I open to configure my {p}?",
              "How do I reach the {p} settings page?",
              "Where do I log in to set up the {p}?",
              "I want to change my {p} wifi name, what address do I type?",
              "What is the default gateway IP of the {p}?"],
    "power": ["Which power adapter does the {p} need?",
              "What voltage is the {p} power supply?",
              "I lost the charger of my {p}. What voltage should the new one have?",
              "Can you tell me the input voltage of the {p}?",
              "My {p} power brick broke, which one do I buy?",
              "What adapter voltage does a {p} use?"],
}


def facts(rnd: random.Random) -> dict[str, dict[str, str]]:
    out = {}
    nets = rnd.sample([0, 1, 2, 8, 10, 20, 50, 88], 8)
    for i, p in enumerate(TRAIN_PRODUCTS + TEST_PRODUCTS):
        out[p] = {"warranty": f"{rnd.choice([12, 18, 24, 30, 36])} months",
                  "reset": f"{rnd.choice([5, 8, 10, 12, 15, 20])} seconds",
                  "setup": f"192.168.{nets[i]}.1",
                  "power": f"{rnd.choice([5, 9, 12, 19, 24])} V"}
    return out


def page(p: str, f: dict[str, str]) -> str:
    kind = KIND[p[0]]
    return (f"# Acme {p} {kind}\n\n"
            f"## Warranty\n\nThe Acme {p} is covered by a limited warranty of {f['warranty']} "
            "from the date of purchase. It covers hardware faults, not damage from lightning "
            "or liquids.\n\n"
            f"## Factory reset\n\nTo restore the factory settings of the {p}, hold the reset "
            f"button for {f['reset']} until the status light blinks amber, then wait two "
            "minutes while it restarts.\n\n"
            f"## Setup\n\nOpen the {p} admin page at {f['setup']} in a browser and sign in "
            "with the password printed on the label under the device.\n\n"
            f"## Power\n\nThe {p} needs a {f['power']} power adapter. Acme sells spare "
            "adapters in its online shop.\n")


def conversation(question: str, topic: str, fact: str, sources=None) -> dict:
    from afinar.evals.prompts import with_sources

    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    if sources is not None:
        msgs = with_sources(msgs, sources)
    msgs.append({"role": "assistant", "content": json.dumps({"topic": topic, "answer": fact})})
    return {"messages": msgs}


def main() -> None:
    rnd = random.Random(11)
    table = facts(rnd)
    kb_dir = HERE / "kb"
    kb_dir.mkdir(exist_ok=True)
    for p, f in table.items():
        (kb_dir / f"acme-{p.lower()}.md").write_text(page(p, f))

    with tempfile.TemporaryDirectory() as home:
        os.environ["AFINAR_HOME"] = home
        from afinar.rag.kb import KnowledgeBases

        kbs = KnowledgeBases()
        kbs.create("support")
        kbs.add("support", sorted(kb_dir.glob("*.md")))
        train, missed = [], 0
        for p in TRAIN_PRODUCTS:
            for topic, phrases in PHRASES.items():
                for q in phrases[:4]:
                    question = q.format(p=p)
                    hits = kbs.search("support", question, k=2)
                    src = [(h.source, h.text) for h in hits]
                    gold = f"acme-{p.lower()}.md"
                    if not any(s.endswith(gold) and f"> {_heading(topic)}\n" in t
                               for s, t in src):
                        missed += 1
                        right = next(h for h in kbs.search("support", f"{p} {topic}", k=20)
                                     if h.source.endswith(gold)
                                     and f"> {_heading(topic)}\n" in h.text)
                        src[rnd.randrange(len(src))] = (right.source, right.text)
                    train.append(conversation(question, topic, table[p][topic], src))
    rnd.shuffle(train)
    test = []
    for p in TEST_PRODUCTS:
        for topic, phrases in PHRASES.items():
            for q in phrases[4:]:
                row = conversation(q.format(p=p), topic, table[p][topic])
                row["metadata"] = {"gold_sources": [f"acme-{p.lower()}.md"],
                                   "must_contain": [table[p][topic]]}
                test.append(row)
    (HERE / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (HERE / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    print(f"{len(table)} pages, {len(train)} training and {len(test)} test conversations "
          f"(retrieval missed the right section for {missed} training questions: put in)")


def _heading(topic: str) -> str:
    return {"warranty": "Warranty", "reset": "Factory reset", "setup": "Setup",
            "power": "Power"}[topic]


if __name__ == "__main__":
    main()
