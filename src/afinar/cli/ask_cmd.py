"""``afinar ask`` (grounded answers with citations) and ``afinar memory``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.table import Column, Table
from rich.text import Text

from afinar.cli.common import console, err_console, print_json, score_legend
from afinar.rag.rerank import usage as reranker_usage

memory_app = typer.Typer(help="Per-user memories (passive RAG) that can be forgotten for real.",
                         no_args_is_help=True)


def ask(
    question: str = typer.Argument(...),
    kb: str = typer.Option(..., "--kb", help="Knowledge base to answer from."),
    model: str = typer.Option(None, "-m", "--model"),
    group: list[str] = typer.Option(None, "--group", "-g", help="Your groups (ACL)."),
    user: str = typer.Option(None, "--user", help="Add this user's relevant memories."),
    k: int = typer.Option(5, "-k"),
    threshold: float = typer.Option(None, "--threshold", help="Minimum relevance (cosine; "
                                    "default: the base's learned abstention threshold, see kb "
                                    "calibrate, else 0.3)."),
    max_tokens: int = typer.Option(256, "--max-tokens"),
    explain: bool = typer.Option(False, "--explain", help="Also each retriever's score and "
                                 "rank for every source (dense cosine, lexical BM25)."),
    as_json: bool = typer.Option(False, "--json"),
    rerank: str = typer.Option(None, "--rerank", help=f"Rerank the hits: {reranker_usage()} "
                               "(llm: this chat model); none: off (default: the base's, see "
                               "kb tune-fusion)."),
) -> None:
    """Answer from a knowledge base, citing sources; says so when nothing relevant is found."""
    from afinar.cli.chat_cmd import _load
    from afinar.models import Catalog, SamplingParams
    from afinar.rag.answer import ask as ask_service
    from afinar.rag.kb import KnowledgeBases
    from afinar.settings import get_settings

    KnowledgeBases().get(kb)  # an unknown base or model is refused before any model loads
    if rerank is None:
        rerank = KnowledgeBases().stored_reranker(kb)  # what kb tune-fusion chose, if any
    rerank = None if rerank and rerank.strip() == "none" else rerank
    Catalog().get(model or get_settings().default_model)
    from afinar.rag.rerank import get_reranker, parse_name

    if rerank:
        parse_name(rerank)  # an unknown reranker is refused before any model loads
    lm = _load(model or get_settings().default_model)
    reranker = get_reranker(rerank, lm=lm) if rerank else None  # llm: this chat model
    mems = None
    if user:
        from afinar.rag.memory import Memories

        mems = [m.text for m in Memories(user).search(question)]
    a = ask_service(question, lm, kb, groups=group or [], k=k, score_threshold=threshold,
                    params=SamplingParams(temperature=0, max_tokens=max_tokens,
                                          frequency_penalty=0.5), memories=mems,
                    reranker=reranker)
    if as_json:
        print_json({"answer": a.text, "found": a.found, "usage": a.usage,
                    "sources": [{"n": i + 1, "source": h.source, "chunk_id": h.chunk_id,
                                 "pages": h.pages, "start": h.start, "end": h.end,
                                 "score": h.score, "score_kind": h.score_kind,
                                 "dense_score": h.dense_score, "dense_rank": h.dense_rank,
                                 "lexical_score": h.lexical_score,
                                 "lexical_rank": h.lexical_rank}
                                for i, h in enumerate(a.sources)],
                    "citations": [c.__dict__ for c in a.citations]})
        return
    console.print(a.text)
    if a.sources:
        t = Table(Column("n", justify="right"), Column("source", overflow="fold"),
                  Column("section", overflow="fold"), Column("pages", overflow="fold"),
                  Column("offsets", no_wrap=True), Column("score", justify="right"),
                  title="sources", title_justify="left", box=box.SIMPLE_HEAD)
        if explain:
            t.add_column("dense (#)", justify="right", no_wrap=True)
            t.add_column("lexical (#)", justify="right", no_wrap=True)
        for i, h in enumerate(a.sources, 1):
            row = [str(i), Text(Path(h.source).name), Text(" > ".join(h.heading_path[-1:])),
                   ",".join(map(str, h.pages)), f"{h.start}-{h.end}", f"{h.score:.3f}"]
            if explain:
                row += [_score(h.dense_score, h.dense_rank, ".3f"),
                        _score(h.lexical_score, h.lexical_rank, ".2f")]
            t.add_row(*row)
        console.print(t)
        console.print(score_legend(a.sources), style="dim", markup=False)
    for c in a.unsupported:
        err_console.print(f"[yellow]unsupported citation [{c.number}][/]: {c.sentence!r} "
                          f"(overlap {c.support:.0%})")


def _score(score: float | None, rank: int | None, fmt: str) -> str:
    return "-" if score is None else f"{score:{fmt}}" + (f" ({rank})" if rank else "")


@memory_app.command("add")
def mem_add(user: str, text: str) -> None:
    from afinar.rag.memory import Memories

    m = Memories(user).add(text)
    console.print(f"remembered {m.id}")


@memory_app.command("list")
def mem_list(user: str, as_json: bool = typer.Option(False, "--json")) -> None:
    from afinar.rag.memory import Memories

    ms = Memories(user).list()
    if as_json:
        print_json([m.__dict__ for m in ms])
        return
    if not ms:
        console.print(f"no memories for user {user!r}", markup=False, soft_wrap=True)
    for m in ms:
        console.print(f"{m.id}  {m.text}", markup=False, soft_wrap=True)


@memory_app.command("search")
def mem_search(user: str, query: str, k: int = typer.Option(5, "-k")) -> None:
    from afinar.rag.memory import Memories

    found = Memories(user).search(query, k)
    for m in found:
        console.print(f"{m.score:.2f}  {m.id}  {m.text}", markup=False, soft_wrap=True)
    if not found:
        console.print(f"no memories of user {user!r} match", markup=False, soft_wrap=True)


@memory_app.command("forget")
def mem_forget(user: str, memory_id: str = typer.Argument(None),
               everything: bool = typer.Option(False, "--all")) -> None:
    """Delete one memory (or --all): its text and its vectors."""
    from afinar.rag.memory import Memories

    n = Memories(user).forget(memory_id, everything)
    console.print(f"forgot {n} memor{'y' if n == 1 else 'ies'}")
