"""Sampling defaults on a grounded question set: the embedded chat model answering 20 questions
from 20 short passages (one vector store, the ``file_search`` tool of chat completions, the way
the openai SDK calls it) at

- the SDK's omitted parameters (now the model's recommended sampling: SmolLM2-135M-Instruct's
  card says temperature 0.2, top_p 0.9),
- temperature 1.0 (what an omitted temperature meant before: OpenAI's default),
- temperature 0 (greedy).

Correct: the answer contains the gold span (case-insensitive). The passages are invented, so
only the passage holds the answer. Sampled settings run with ``--seeds`` seeds each.

Usage: ``python benchmarks/sampling_defaults.py [--seeds 2] [--max-tokens 48]``

Measured (2 cores, 257 s): omitted parameters (0.2 / 0.9) 20 of 40 correct (50%), temperature
1.0 15 of 40 (38%), temperature 0 9 of 20 (45%): the SDK's defaults now do no worse than the
recommended or greedy settings, where they used to sample at 1.0.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import openai

sys.path.insert(0, os.path.dirname(__file__))
from load import free_port, start_server  # noqa: E402  (the same server start)

# (passage, question, gold span)
ITEMS = [
    ("The Orvel Bridge in Tasmund opened in 1987 and is 412 metres long.",
     "When did the Orvel Bridge open?", "1987"),
    ("Kestrin tea is grown on the slopes of Mount Beral and is harvested in April.",
     "Where is Kestrin tea grown?", "Beral"),
    ("The Halvik library lends each member at most 6 books at a time.",
     "How many books may a Halvik library member borrow at once?", "6"),
    ("The mascot of the Ferrow school is a grey heron named Pim.",
     "What is the name of the Ferrow school mascot?", "Pim"),
    ("Line 9 of the Dornel tram runs every 12 minutes from the harbour to the airport.",
     "How often does Dornel tram line 9 run?", "12 minutes"),
    ("The Zelta X2 router is reset by holding the rear button for 15 seconds.",
     "How long do you hold the button to reset the Zelta X2?", "15 seconds"),
    ("Marisol Quent founded the Quent Glassworks in the town of Avelport.",
     "Who founded the Quent Glassworks?", "Marisol"),
    ("The annual Brask lantern festival takes place on the first Saturday of November.",
     "When is the Brask lantern festival?", "November"),
    ("Employees of Norrow Ltd receive 27 days of paid leave per year.",
     "How many days of paid leave do Norrow employees get?", "27"),
    ("The Pellin river freezes over every January near the village of Oska.",
     "Near which village does the Pellin river freeze?", "Oska"),
    ("The Tovar museum is closed on Mondays and opens at 10 am on other days.",
     "On which day is the Tovar museum closed?", "Monday"),
    ("Crane model K-40 can lift up to 8 tonnes at a reach of 20 metres.",
     "How much can the K-40 crane lift?", "8 tonnes"),
    ("The official colour of the Lumo cycling team is teal.",
     "What is the Lumo cycling team's colour?", "teal"),
    ("Dr. Anneke Voss discovered the Voss comet in 2003 from the Rilla observatory.",
     "From which observatory was the Voss comet discovered?", "Rilla"),
    ("Parcel lockers at Semba station accept parcels up to 30 kilograms.",
     "What is the weight limit of the Semba station parcel lockers?", "30"),
    ("The Garnet Cafe's signature dish is a smoked beetroot soup.",
     "What is the Garnet Cafe's signature dish?", "beetroot"),
    ("Version 4.2 of the Ostra app added dark mode and removed the legacy export.",
     "Which version of the Ostra app added dark mode?", "4.2"),
    ("The Welda hiking trail is 34 kilometres long and ends at Lake Imra.",
     "Where does the Welda hiking trail end?", "Imra"),
    ("Tickets for the Corvo ferry cost 9 euros for adults and 4 euros for children.",
     "How much is an adult ticket for the Corvo ferry?", "9 euros"),
    ("The Plessa choir rehearses every Thursday evening in the old town hall.",
     "When does the Plessa choir rehearse?", "Thursday"),
]
SETTINGS = {"omitted (model default)": {}, "temperature 1.0": {"temperature": 1.0},
            "temperature 0": {"temperature": 0.0}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args()
    home = os.environ.get("AFINAR_HOME") or tempfile.mkdtemp(prefix="afinar-sampling-")
    port = free_port()
    server = start_server(home, port)
    t0 = time.monotonic()
    try:
        sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                            max_retries=0, timeout=600)
        files = [sdk.files.create(file=(f"passage{i}.md", text.encode()),
                                  purpose="assistants").id
                 for i, (text, _q, _g) in enumerate(ITEMS)]
        store = sdk.vector_stores.create(name="grounded", file_ids=files).id
        tool = {"type": "file_search", "vector_store_ids": [store], "max_num_results": 3}
        scores: dict[str, list[int]] = {}
        examples: dict[str, str] = {}
        for name, extra in SETTINGS.items():
            seeds = [0] if extra.get("temperature") == 0.0 else list(range(args.seeds))
            hits = []
            for seed in seeds:
                for text, question, gold in ITEMS:
                    r = sdk.chat.completions.create(
                        model=args.model, messages=[{"role": "user", "content": question}],
                        tools=[tool], max_tokens=args.max_tokens, seed=seed, **extra)
                    answer = r.choices[0].message.content or ""
                    hits.append(int(gold.lower() in answer.lower()))
                    examples.setdefault(name, f"{question} -> {answer[:70]!r}")
            scores[name] = hits
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"{len(ITEMS)} grounded questions, {args.model}, max_tokens {args.max_tokens}, "
          f"{time.monotonic() - t0:.0f} s")
    print(f"{'setting':<26}{'answers':>8}{'correct':>9}{'rate':>7}")
    for name, hits in scores.items():
        print(f"{name:<26}{len(hits):>8}{sum(hits):>9}{sum(hits) / len(hits):>7.0%}")
    for name, ex in examples.items():
        print(f"  {name}: {ex}"[:79])


if __name__ == "__main__":
    main()
