"""``afinar demo``: the whole story on the embedded defaults, every number measured in the run.

chat -> validate the support tickets -> fine-tune (LoRA) -> build the support knowledge base ->
evaluate base, few-shot, RAG, fine-tuned and fine-tuned+RAG on held-out tickets -> the table, the
recommendation and an HTML report.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

import typer

from afinar.cli.common import console, err_console
from afinar.settings import get_settings

KB_NAME = "acme-support"


def demo(
    model: str = typer.Option(None, "-m", "--model", help="Chat model (default: the embedded one)."),
    examples: Path = typer.Option(Path("examples/support"), "--examples",
                                  help="Folder with kb/, train.jsonl, test.jsonl, eval.yaml."),
    report: Path = typer.Option(Path("demo-report.html"), "--report", help="HTML report path."),
    limit: int = typer.Option(None, "--limit", help="Evaluate only the first N test tickets."),
    quick: bool = typer.Option(False, "--quick", help="Only the chat step."),
) -> None:
    """The main job: chat, validate, fine-tune, build the knowledge base, evaluate five
    strategies side by side and recommend one."""
    from afinar.cli.chat_cmd import _answer, _load
    from afinar.models.generation import Generator, SamplingParams

    t_start = time.perf_counter()
    model = model or get_settings().default_model
    question = "In two sentences, what is fine-tuning a language model?"
    need = [examples / n for n in ("train.jsonl", "test.jsonl", "eval.yaml", "kb")]
    if not quick and not examples.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(examples))
    if not quick and not all(p.exists() for p in need):  # before anything loads
        raise typer.BadParameter(f"{examples} needs kb/, train.jsonl, test.jsonl and eval.yaml "
                                 "(run make demo from the repository root)",
                                 param_hint="--examples")
    err_console.rule("1. chat with the embedded model")
    err_console.print(f"[bold]model[/]: {model}\n[bold]question[/]: {question}")
    _answer(Generator(_load(model)), [{"role": "user", "content": question}],
            SamplingParams(temperature=0.0, max_tokens=120))
    if quick:
        return
    train, test, eval_yaml, kb_dir = need
    _validate(model, train, test)
    tuned = _fine_tune(model, train)
    _knowledge_base(kb_dir)
    _evaluate(eval_yaml, model, tuned, report, limit)
    console.print(f"\ndemo finished in {(time.perf_counter() - t_start) / 60:.1f} min; report: "
                  f"{report.resolve()}")
    console.print("studio: `afinar serve`, then open http://127.0.0.1:8000/")


def _validate(model: str, train: Path, test: Path) -> None:
    from afinar.data.validate import validate_file
    from afinar.evals.cases import read_cases
    from afinar.models import Catalog, load_tokenizer

    err_console.rule("2. validate the data")
    r = validate_file(train, load_tokenizer(Catalog().get(model)), max_seq_len=2048)
    st = r.stats
    err_console.print(f"{train}: {r.n_examples} examples, {'valid' if r.ok else 'INVALID'}; "
                      f"{st['total_tokens']} tokens, {st['total_trained_tokens']} trained; "
                      f"{st['default_epochs']} epochs by OpenAI's rule")
    if not r.ok:
        raise typer.Exit(1)
    cases = read_cases(test)
    err_console.print(f"{test}: {len(cases)} held-out tickets (products and phrasings the "
                      "training tickets never use)")


def _fine_tune(model: str, train: Path) -> str:
    from afinar.cli.tune_cmd import _follow
    from afinar.store.files import Files
    from afinar.tuning import Jobs, spawn_worker

    err_console.rule("3. fine-tune (LoRA) in a worker process")
    f = Files().create_from_path(train, "fine-tune")
    job = Jobs().create(model=model, training_file=f.id, seed=0, suffix="support")
    spawn_worker()
    status = _follow(job.id)
    job = Jobs().get(job.id)
    if status != "succeeded" or not job.fine_tuned_model:
        raise typer.Exit(1)
    return job.fine_tuned_model


def _knowledge_base(kb_dir: Path) -> None:
    from afinar.errors import NotFound
    from afinar.rag.kb import KnowledgeBases

    err_console.rule("4. the support knowledge base")
    kbs = KnowledgeBases()
    try:
        kbs.get(KB_NAME)
    except NotFound:
        kbs.create(KB_NAME)
    rep = kbs.sync(KB_NAME, kb_dir)
    docs = kbs.documents(KB_NAME)
    err_console.print(f"{KB_NAME}: {len(docs)} documents from {kb_dir} ({len(rep.added)} added, "
                      f"{len(rep.updated)} updated, {len(rep.unchanged)} unchanged)")


def _evaluate(eval_yaml: Path, model: str, tuned: str, report: Path, limit: int | None) -> None:
    from afinar.cli.eval_cmd import print_summary, run_with_bars
    from afinar.evals.config import load_config
    from afinar.evals.report import write_html

    err_console.rule("5. evaluate five strategies on the held-out tickets")
    cfg = load_config(eval_yaml, model=model, knowledge_base=KB_NAME, limit=limit)
    ev = run_with_bars(cfg.with_fine_tuned([tuned]))
    summary = ev.summary()
    print_summary(summary)
    write_html(summary, report)
    err_console.print(f"run {ev.id}; HTML report: {report}")
