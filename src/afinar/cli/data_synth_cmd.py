"""``afinar data synth``: grounded synthetic training (or evaluation) data from a knowledge base
(the service: ``afinar.rag.synth``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.progress import Progress, TextColumn
from rich.table import Column, Table

from afinar.cli.common import console, err_console, existing_file, print_json, progress_columns, \
    status
from afinar.errors import InvalidRequest


def synth(
    kb: str = typer.Option(..., "--kb", help="Knowledge base whose chunks the questions come "
                                             "from."),
    model: str = typer.Option(None, "-m", "--model", help="Chat model that writes them (any "
                              "catalog id; default: the settings' model)."),
    n: int = typer.Option(500, "--n", "-n", help="Questions to generate (those kept are fewer: "
                                                 "the report says why)."),
    style: str = typer.Option("qa", "--style", help="qa: question and answer; raft: the "
                              "question with the gold chunk among retrieved distractors in the "
                              "prompt (the fine_tuned_rag layout), and 'not in the sources' "
                              "examples."),
    out: Path = typer.Option(Path("train.jsonl"), "--out", "-o", help="File to write."),
    test: Path = typer.Option(None, "--test", help="Held-out file: its questions are dropped "
                              "from the output (exact, normalized, near).",
                              callback=existing_file),
    as_eval: bool = typer.Option(False, "--as-eval", help="Write an evaluation test set "
                                 "(metadata.gold_sources) instead of training data."),
    judge: Path = typer.Option(None, "--judge", help="Grader file (YAML/JSON, afinar.graders) "
                               "that must also pass each answer: the answer is its sample, "
                               "{question, passage} its item.", callback=existing_file),
    judge_min: float = typer.Option(0.5, "--judge-min", help="The judge's passing score."),
    k: int = typer.Option(3, "--k", help="raft: sources in each prompt (the strategy's k)."),
    absent: float = typer.Option(0.2, "--absent", help="raft: share of examples whose gold "
                                 "chunk is left out (answer: not in the sources)."),
    system: str = typer.Option(None, "--system", help="System message of every example (use "
                               "your evaluation's)."),
    min_support: float = typer.Option(0.5, "--min-support", help="Share of each answer "
                                      "sentence's content words its chunk must hold."),
    seed: int = typer.Option(0, "--seed", help="Same knowledge base, model and seed: same data."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Questions and answers generated from a knowledge base's chunks, each answer checked
    against its chunk; deduplicated, leak-checked, validated, then written."""
    from afinar.rag.synth import Synthesizer
    from afinar.settings import get_settings

    model_id = model or get_settings().default_model
    from afinar.models import Catalog

    Catalog().get(model_id)  # an unknown model fails before anything loads
    from afinar.rag.synth import grader_judge

    judge_fn = grader_judge(judge) if judge else None  # a bad grader fails before any work
    options = dict(n=n, style=style, test_file=test, as_eval=as_eval, judge=judge_fn,
                   judge_min=judge_min, seed=seed, k=k, absent_share=absent, system=system,
                   min_support=min_support)
    # every option and the knowledge base are checked before the model loads
    syn = Synthesizer(kb, None, out, **options)
    from afinar.models import ModelCache

    with status(f"loading {model_id}") as st:
        syn.lm = ModelCache(max_models=1).get(model_id, progress=lambda msg: st.update(msg))
    with Progress(*progress_columns("questions", 14, TextColumn("{task.fields[kept]} kept")),
                  console=err_console) as bar:
        task = bar.add_task("generating", total=n, kept=0)
        report = syn.run(lambda done, total, kept: bar.update(task, completed=done, kept=kept))
    if as_json:
        print_json(report.to_dict())
    else:
        print_report(report)
    if not report.written:
        raise InvalidRequest(f"{out} not written: {report.not_written}", param="out")


def print_report(report) -> None:
    """Generated, kept (by kind) and dropped (by reason): one table within 80 columns."""
    from afinar.rag.synth import REASONS

    d = report.to_dict()
    total = d["generated"] or 1
    t = Table(Column("", no_wrap=True), Column("n", justify="right", no_wrap=True),
              Column("share", justify="right", no_wrap=True),
              Column("", overflow="fold", ratio=1), box=box.SIMPLE_HEAD, pad_edge=False,
              title=escape(f"{d['kb']}: {d['style']} data by {d['model']} from "
                           f"{d['chunks']} chunks"))
    t.add_row("generated", str(d["generated"]), "100%", "")
    t.add_row("[green]kept[/]", str(d["kept"]), f"{d['kept'] / total:.0%}",
              escape(", ".join(f"{v} {k}" for k, v in sorted(d["kinds"].items()))))
    for reason, count in d["dropped"].items():
        t.add_row(f"dropped: {reason}", str(count), f"{count / total:.0%}",
                  escape(REASONS[reason]))
    console.print(t)
    if d["chunks_skipped"]:
        console.print(f"{d['chunks_skipped']} chunks were too short to ask about")
    for w in d["validation"].get("warnings") or []:
        err_console.print(f"  warning: {escape(w)}")
    if report.written:
        console.print(f"wrote {escape(d['out'])} ({d['kept']} examples, validated)")


def register(app: typer.Typer) -> None:
    """Add ``synth`` to the ``afinar data`` group."""
    app.command("synth")(synth)
