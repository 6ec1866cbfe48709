"""``afinar kb``: knowledge bases (create, add, sync, watch, search, list, docs, remove, check, delete,
tune-fusion, calibrate)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import typer
from rich.progress import Progress, TextColumn
from rich import box
from rich.table import Column, Table
from rich.text import Text

from afinar.cli.common import console, err_console, existing_file, explain_hit, \
    print_json, progress_columns, quiet_libraries, score_legend
from afinar.rag.fusion import FUSIONS
from afinar.rag.rerank import usage as reranker_usage
from afinar.rag.retrievers import RETRIEVERS

app = typer.Typer(help="Knowledge bases for RAG: hybrid search with access control.",
                  no_args_is_help=True)


def _kbs():
    from afinar.rag.kb import KnowledgeBases

    return KnowledgeBases()


def _attrs(values: list[str] | None) -> dict:
    out = {}
    for v in values or []:
        if "=" not in v:
            raise typer.BadParameter(f"--attr takes KEY=VALUE, not {v!r}")
        k, val = v.split("=", 1)
        try:
            out[k] = json.loads(val)
        except ValueError:
            out[k] = val
    return out


@app.command("create")
def create(name: str, embedding_model: str = typer.Option(None, "--embedding-model"),
           max_chunk_tokens: int = typer.Option(None, "--max-chunk-tokens"),
           overlap_tokens: int = typer.Option(None, "--overlap-tokens"),
           embed_backend: str = typer.Option(None, "--embed-backend", help="torch (float32), "
                                             "int8 (quantised) or bf16 (bfloat16: fastest "
                                             "on CPUs with AMX/AVX512-BF16); default: "
                                             "AFINAR_EMBED_BACKEND. Queries use the same.")
           ) -> None:
    """Create a knowledge base (chunking 'auto' unless sizes are given)."""
    chunking = None
    if max_chunk_tokens or overlap_tokens:
        chunking = {"type": "static", "static": {
            "max_chunk_size_tokens": max_chunk_tokens or 800,
            "chunk_overlap_tokens": overlap_tokens if overlap_tokens is not None else 400}}
    rec = _kbs().create(name, embedding_model, chunking, embed_backend=embed_backend)
    console.print(f"created {rec.name} ({rec.id}), embeddings: {rec.embedding_model} "
                  f"({rec.info['embed_backend']})", soft_wrap=True)


@app.command("reembed")
def reembed(name: str, backend: str = typer.Option(..., "--backend", help="torch, int8 or bf16.")
            ) -> None:
    """Embed every chunk again with another embedding backend; queries then use it too."""
    from afinar.rag.embeddings import check_backend

    check_backend(backend, param="--backend")
    kbs = _kbs()
    kbs.get(name)
    with Progress(*progress_columns("chunks", 9), console=err_console) as bar:
        task = bar.add_task("embedding", total=None)
        n = kbs.reembed(name, backend, progress=lambda p: bar.update(
            task, completed=p["chunks"], total=p["total"]))
    console.print(f"re-embedded {n} chunks of {name} with the {backend} backend",
                  soft_wrap=True)


def _ingest(fn, *args, **kw):
    """Run an ingestion under a progress bar; one line per file that failed, exit 1 if any."""
    cols = progress_columns("files", 9, TextColumn("{task.fields[chunks]} chunks"))
    with quiet_libraries("pypdf", "pdfminer", "docx", "bs4"), \
            Progress(*cols, console=err_console) as bar:
        task = bar.add_task("ingesting", total=None, chunks=0)

        def progress(p):
            bar.update(task, completed=p["files"], total=p["total"], chunks=p["chunks"])

        r = fn(*args, progress=progress, **kw)
        bar.update(task, chunks=r.chunks)
    console.print(f"added {len(r.added)}, updated {len(r.updated)}, unchanged "
                  f"{len(r.unchanged)}, deleted {len(r.deleted)}, failed {len(r.failed)}; "
                  f"{r.chunks} chunks in {r.seconds:.1f}s", soft_wrap=True)
    for src, msg in r.failed:
        reason = msg[len(src) + 2:] if msg.startswith(f"{src}: ") else msg
        err_console.print(f"failed {src}: {reason}", markup=False, soft_wrap=True)
    if r.failed:
        raise typer.Exit(1)
    return r


@app.command("add")
def add(name: str, paths: list[Path],
        group: list[str] = typer.Option(None, "--group", "-g", help="Who may read (repeatable); "
                                        "none: everyone."),
        attr: list[str] = typer.Option(None, "--attr", help="Attribute KEY=VALUE (repeatable).")
        ) -> None:
    """Add files or folders (unchanged files are skipped, changed ones replaced)."""
    for p in paths:  # a missing path or an unknown base is refused before the progress bar
        if not p.exists():
            existing_file(p)
    kbs = _kbs()
    kbs.get(name)
    _ingest(kbs.add, name, paths, group or [], _attrs(attr))


@app.command("sync")
def sync(name: str, folder: Path, group: list[str] = typer.Option(None, "--group", "-g"),
         attr: list[str] = typer.Option(None, "--attr")) -> None:
    """Make the knowledge base equal to FOLDER: add new, replace changed, delete removed files."""
    if not folder.is_dir():
        raise (NotADirectoryError if folder.exists() else FileNotFoundError)(
            errno.ENOTDIR if folder.exists() else errno.ENOENT, "not a folder", str(folder))
    kbs = _kbs()
    kbs.get(name)
    _ingest(kbs.sync, name, folder, group or [], _attrs(attr))


def _pass_lines(p, root: Path) -> list[str]:
    """A watch pass's sync report: one summary line, then one line per changed file (80
    columns: a long path keeps its end)."""
    import time

    r = p.report
    lines = [f"{time.strftime('%H:%M:%S', time.localtime(p.at))} pass {p.number}: added "
             f"{len(r.added)}, changed {len(r.updated)}, deleted {len(r.deleted)}, unchanged "
             f"{len(r.unchanged)}" + (f", failed {len(r.failed)}" if r.failed else "")]
    for mark, names in (("+", r.added), ("~", r.updated), ("-", r.deleted),
                        ("!", [f"{s}: {m}" for s, m in r.failed])):
        for name in names:
            rel = name[len(str(root)) + 1:] if name.startswith(str(root) + "/") else name
            lines.append(f"  {mark} " + (rel if len(rel) <= 76 else "…" + rel[-75:]))
    return lines


@app.command("watch")
def watch(name: str, folder: Path,
          interval: str = typer.Option("2s", "--interval", help="How often the folder is "
                                       "checked: 0.5s, 2s, 1m."),
          once: bool = typer.Option(False, "--once", help="One pass, then exit (for a "
                                    "schedule: afinar schedule add --every 5m -- kb watch "
                                    "NAME DIR --once)."),
          group: list[str] = typer.Option(None, "--group", "-g"),
          attr: list[str] = typer.Option(None, "--attr")) -> None:
    """Keep the knowledge base equal to FOLDER as files are added, changed and deleted: a
    sync report per pass that changed something; searches never see a removed document."""
    from afinar.rag.watch import FolderWatcher
    from afinar.store.schedules import parse_duration

    seconds = parse_duration(interval, "--interval", minimum=0.1)
    if not folder.is_dir():
        raise (NotADirectoryError if folder.exists() else FileNotFoundError)(
            errno.ENOTDIR if folder.exists() else errno.ENOENT, "not a folder", str(folder))
    watcher = FolderWatcher(_kbs(), name, folder, group or [], _attrs(attr))
    failed = []

    def show(p) -> None:
        failed.extend(p.report.failed)
        for line in _pass_lines(p, watcher.folder):
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    if not once:
        err_console.print(f"watching {watcher.folder} every {interval} (Ctrl-C stops)",
                          markup=False, soft_wrap=True)
    with quiet_libraries("pypdf", "pdfminer", "docx", "bs4"):
        try:
            watcher.run(seconds, show, once=once)
        except KeyboardInterrupt:
            return
    if once and failed:
        raise typer.Exit(1)


@app.command("search")
def search(name: str, query: str, k: int = typer.Option(5, "-k"),
           group: list[str] = typer.Option(None, "--group", "-g", help="Your groups."),
           mode: str = typer.Option(None, help=f"Retriever: {', '.join(RETRIEVERS.names())} "
                                    "(default: the base's, see tune-fusion; else hybrid)."),
           fusion: str = typer.Option(None, "--fusion", help="Fusion of the two rankings: "
                                      f"{', '.join(FUSIONS.names())} (default: the mode's)."),
           filters: str = typer.Option(None, "--filters", help="OpenAI filter JSON."),
           threshold: float = typer.Option(0.0, "--threshold", help="Minimum relevance: the "
                                           "cosine in hybrid mode, else the shown score."),
           explain: bool = typer.Option(False, "--explain", help="Also each retriever's score "
                                        "and rank (dense cosine, lexical BM25)."),
           rerank: str = typer.Option(None, "--rerank", help=f"Rerank: {reranker_usage()} "
                                      "(llm: the chat model); none: off (default: the "
                                      "base's, see tune-fusion)."),
           rerank_depth: int = typer.Option(None, "--rerank-depth", min=1, help="Hits "
                                            "reranked (default 3 x k)."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Search: documents outside your groups are never considered. Results are in rank order,
    with the score they are ranked by (its kind is printed first)."""
    try:
        flt = json.loads(filters) if filters else None
    except ValueError as e:
        raise typer.BadParameter(f"not JSON ({e})", param_hint="--filters") from None
    if mode is not None:
        RETRIEVERS.get(mode)  # unknown names are refused before anything loads
    if fusion is not None:
        FUSIONS.get(fusion)
    reranker = None
    if rerank is None:
        rerank = _kbs().stored_reranker(name)  # what tune-fusion chose for the base, if any
    if rerank and rerank.strip() != "none":
        from afinar.rag.rerank import get_reranker, parse_name

        parse_name(rerank)
        _kbs().get(name)  # unknown names are refused before a model loads
        reranker = get_reranker(rerank)
    depth = max(rerank_depth or 3 * k, k) if reranker else k
    hits = _kbs().search(name, query, groups=group or [], k=depth, mode=mode, fusion=fusion,
                         filters=flt, score_threshold=threshold)
    if reranker:
        hits = reranker.rerank(query, hits)[:k]
    if as_json:
        print_json([dict(h.__dict__) for h in hits])
        return
    if not hits:
        console.print("no results")
        return
    console.print(score_legend(hits), style="dim", markup=False)
    for n, h in enumerate(hits, 1):
        where = " > ".join(h.heading_path[-2:])
        page = f" p.{','.join(map(str, h.pages))}" if h.pages else ""
        line = Text.assemble((f"[{n}] {h.score:.3f}", "bold"), f"  {Path(h.source).name}{page}",
                             (f"  {where}" if where else "", "dim"))
        line.truncate(console.width, overflow="ellipsis")
        console.print(line, no_wrap=True)
        if explain:
            console.print("    " + explain_hit(h), style="dim", markup=False)
        body = " ".join(h.text.split("\n", 1)[-1].split())
        console.print("    " + body[:300] + ("…" if len(body) > 300 else ""), markup=False)


@app.command("list")
def list_kbs() -> None:
    t = Table(Column("name", overflow="fold"), Column("id", no_wrap=True),
              Column("embeddings", no_wrap=True), Column("docs", justify="right", no_wrap=True),
              Column("version", justify="right", no_wrap=True), box=box.SIMPLE_HEAD,
              pad_edge=False)
    kbs = _kbs()
    for r in kbs.list():
        t.add_row(r.name, r.id, r.embedding_model, str(len(kbs.documents(r.id))), str(r.version))
    console.print(t)


@app.command("docs")
def docs(name: str) -> None:
    """Documents of a knowledge base."""
    t = Table(Column("source", overflow="fold", ratio=1),
              Column("chunks", justify="right", no_wrap=True), Column("groups", overflow="fold"),
              Column("status", no_wrap=True), box=box.SIMPLE_HEAD, pad_edge=False)
    for d in _kbs().documents(name):
        t.add_row(Text(d.source), str(d.n_chunks), Text(",".join(d.groups) or "(everyone)"),
                  d.status)
    console.print(t)


@app.command("remove")
def remove(name: str, source: str) -> None:
    """Remove one document (by source path or id)."""
    ok = _kbs().remove(name, str(Path(source).resolve()) if Path(source).exists() else source)
    console.print("removed" if ok else "no such document")
    if not ok:
        raise typer.Exit(1)


@app.command("check")
def check(name: str, repair: bool = typer.Option(False, "--repair")) -> None:
    """Verify that records, the vector index and the lexical index agree."""
    r = _kbs().check(name, repair)
    for p in r["problems"]:
        console.print(f"[yellow]drift[/]: {p}")
    console.print(("[green]consistent[/]" if r["ok"] else "[red]inconsistent[/]")
                  + f": {r['documents']} documents, {r['chunks']} chunks, version {r['version']}"
                  + (" (repaired; re-run kb sync for dropped documents)" if r["repaired"] else ""))
    if not r["ok"] and not r["repaired"]:
        raise typer.Exit(1)


@app.command("delete")
def delete(name: str) -> None:
    _kbs().delete(name)
    console.print(f"deleted {name}")


def _labelled(kbs, name: str, labelled: Path) -> list[tuple[str, set[str]]]:
    sources = [d.source for d in kbs.documents(name)]
    rows = []
    for n, line in enumerate(labelled.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            query, items = obj["query"], obj.get("relevant", [])
        except (ValueError, KeyError, TypeError):
            raise typer.BadParameter(f"{labelled}:{n}: not a JSON object with a \"query\"") \
                from None
        rel = set()
        for item in items:
            hits = [s for s in sources if s == item or s.endswith("/" + item)]
            if not hits:
                raise typer.BadParameter(f"{labelled}:{n}: no document matches {item!r}")
            rel.update(hits)
        rows.append((query, rel))
    return rows


@app.command("tune-fusion")
def tune_fusion(name: str, labelled: Path = typer.Argument(
                    None, help="JSONL of {\"query\": ..., \"relevant\": [file names]}; "
                    "none: synthetic queries (first sentences of sampled chunks; easier than "
                    "real questions).", callback=existing_file),
                group: list[str] = typer.Option(None, "--group", "-g"),
                rerank: list[str] = typer.Option(None, "--rerank", help="Rerankers to try "
                                                 "(repeatable; default llm: the chat model)."),
                cross_encoder: Path = typer.Option(None, "--cross-encoder", help="Also try "
                                                   "this local cross-encoder folder."),
                no_rerank: bool = typer.Option(False, "--no-rerank", help="Tune the fusion "
                                               "only; keep the stored rerank choice."),
                margin: float = typer.Option(0.02, "--margin", min=0.0, help="nDCG@10 a "
                                             "reranker must add to be chosen."),
                sample: int = typer.Option(50, "--sample", min=1, help="Synthetic queries "
                                           "(without a labelled file)."),
                calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate",
                                               help="Also learn the abstention threshold "
                                               "(see kb calibrate).")) -> None:
    """Choose the fusion (RRF or weighted, and its weight) by nDCG@10, then whether reranking
    raises it by more than --margin; store both on the base (search and ask use them)."""
    if cross_encoder is not None and not cross_encoder.is_dir():  # bad input before any work
        err = NotADirectoryError if cross_encoder.exists() else FileNotFoundError
        code = errno.ENOTDIR if cross_encoder.exists() else errno.ENOENT
        raise err(code, os.strerror(code), str(cross_encoder))
    kbs = _kbs()
    kbs.get(name)
    if labelled:
        rows, by = _labelled(kbs, name, labelled), "source"
    else:
        from afinar.rag.calibration import synthetic_queries

        rows, by = synthetic_queries(kbs, name, sample, groups=group or []), "chunk"
    names = [] if no_rerank else [*(rerank or ["llm"])]
    if cross_encoder is not None and not no_rerank:
        names.append(f"cross-encoder:{cross_encoder.resolve()}")
    from afinar.evals.fusion_tuning import calibrate_abstention, tune_fusion as tune

    r = tune(kbs, name, rows, groups=group or [], rerankers=names, margin=margin, by=by)
    what = f"{len(rows)} {'labelled' if labelled else 'synthetic'} queries"
    t = Table(f"fusion ({what})", Column("nDCG@10", justify="right"), box=box.SIMPLE_HEAD)
    for mode, v in sorted(r["ndcg"].items(), key=lambda kv: -kv[1]):
        t.add_row(mode + ("  <- chosen" if mode == r["best"] else ""), f"{v:.3f}")
    console.print(t)
    if "rerank" in r:
        rr = r["rerank"]
        t = Table(Column(f"rerank (on {r['best']})", overflow="fold"),
                  Column("nDCG@10", justify="right"), Column("ms/query", justify="right"),
                  box=box.SIMPLE_HEAD)
        for n, v in rr["ndcg"].items():
            t.add_row(Text(n + ("  <- chosen" if n == rr["chosen"] else "")), f"{v:.3f}",
                      f"{rr['latency_ms'][n]:.0f}")
        console.print(t)
        console.print(f"rerank: {rr['chosen']} (a reranker must add more than "
                      f"{rr['margin']:.3f} nDCG@10)", markup=False)
    if calibrate:
        _print_calibration(calibrate_abstention(
            kbs, name, [q for q, _ in rows] if labelled else None, sample=sample))


def _print_calibration(c: dict) -> None:
    kind = "synthetic" if c["synthetic"] else "labelled"
    console.print(f"abstain below dense cosine {c['threshold']:.3f} (balanced accuracy "
                  f"{c['balanced_accuracy']:.2f})\n  median best cosine "
                  f"{c['positive_median']:.3f} on {c['positives']} {kind} queries, "
                  f"{c['negative_median']:.3f} on {c['negatives']} off-topic", markup=False)


@app.command("calibrate")
def calibrate(name: str, labelled: Path = typer.Argument(
                  None, help="JSONL of {\"query\": ...} the base answers; none: synthetic "
                  "queries from sampled chunks (easier than real questions).",
                  callback=existing_file),
              sample: int = typer.Option(50, "--sample", min=1),
              off_topic: Path = typer.Option(None, "--off-topic", help="Text file, one "
                                             "off-topic question a line (default: packaged "
                                             "general questions).", callback=existing_file),
              clear: bool = typer.Option(False, "--clear", help="Forget the threshold: "
                                         "never abstain on a weak hit.")) -> None:
    """Learn when answers from this base should abstain: a threshold on the best hit's dense
    similarity between questions it answers and off-topic ones (ask and the API use it)."""
    kbs = _kbs()
    kbs.get(name)
    if clear:
        from afinar.rag.calibration import KEY

        kbs.update_info(name, lambda info: [info.pop(k, None)
                                            for k in (KEY, "abstain_calibration")])
        console.print(f"{name}: abstention threshold cleared")
        return
    qs = [q for q, _ in _labelled(kbs, name, labelled)] if labelled else None
    neg = [x.strip() for x in off_topic.read_text().splitlines() if x.strip()] \
        if off_topic else None
    from afinar.evals.fusion_tuning import calibrate_abstention

    _print_calibration(calibrate_abstention(kbs, name, qs, sample=sample, off_topic=neg))
