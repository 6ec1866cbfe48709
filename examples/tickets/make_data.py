"""Generate the ticket-triage example: support tickets answered with a fixed JSON verdict.

A format task: the base model answers in prose; the fine-tuned one must answer exactly
{"category": ..., "urgent": ...}. Deterministic (seeded); writes train.jsonl and test.jsonl.

    python examples/tickets/make_data.py
"""

import json
import random
from pathlib import Path

SYSTEM = ("You triage support tickets for Acme routers. Reply with JSON only: "
          '{"category": "billing|network|account|hardware", "urgent": true|false}.')
TOPICS = {
    "billing": ["I was charged twice on my last invoice", "my refund has not arrived",
                "the invoice shows the wrong plan", "I want to change my payment card",
                "why did my monthly bill go up"],
    "network": ["the wifi keeps dropping", "my connection is very slow in the evening",
                "I cannot reach any website", "the 5 GHz network does not show up",
                "devices lose the connection every hour"],
    "account": ["I forgot my password", "I cannot log in to the portal",
                "please change the email on my account", "my account was locked",
                "how do I add a second user to my account"],
    "hardware": ["the power LED blinks red", "the router does not turn on",
                 "one ethernet port is broken", "the router gets very hot",
                 "the reset button is stuck"],
}
URGENT = ["Everything is down and I work from home, please help asap.",
          "This is urgent, our shop cannot take orders.", "Please fix it today, it is critical."]
CALM = ["No rush.", "Whenever you have time.", "Thanks in advance.", ""]
OPENERS = ["Hi,", "Hello,", "Dear support,", "Hey there.", ""]


def ticket(rnd: random.Random, held_out: bool) -> dict:
    """Training tickets use the first four phrasings of each topic; test tickets the fifth, so
    every test ticket says something the training data never did."""
    cat = rnd.choice(sorted(TOPICS))
    urgent = rnd.random() < 0.4
    topic = TOPICS[cat][4] if held_out else rnd.choice(TOPICS[cat][:4])
    text = " ".join(x for x in (rnd.choice(OPENERS), topic.capitalize() + ".",
                                rnd.choice(URGENT if urgent else CALM)) if x)
    answer = json.dumps({"category": cat, "urgent": urgent})
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": text},
                         {"role": "assistant", "content": answer}]}


def main() -> None:
    rnd = random.Random(7)
    here = Path(__file__).parent
    for name, n, held_out in (("train.jsonl", 80, False), ("test.jsonl", 24, True)):
        seen, part = set(), []
        while len(part) < n:
            t = ticket(rnd, held_out)
            key = t["messages"][1]["content"]
            if key not in seen:
                seen.add(key)
                part.append(t)
        (here / name).write_text("".join(json.dumps(r) + "\n" for r in part))


if __name__ == "__main__":
    main()
