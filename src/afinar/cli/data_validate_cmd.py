"""``afinar data validate | preview | convert``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.table import Column, Table
from rich.text import Text

from afinar.cli.common import console, err_console, existing_file, print_json, status
from afinar.data.formats import detect, parse_example
from afinar.data.issues import Issue
from afinar.data.reader import iter_rows
from afinar.settings import get_settings


def _tokenizer(model: str | None):
    from afinar.models import Catalog, load_tokenizer

    info = Catalog().get(model or get_settings().default_model)
    with status(f"loading the {info.id} tokenizer"):
        return info, load_tokenizer(info)


def _fmt_num(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"


def validate(
    file: Path = typer.Argument(..., help="JSONL, JSON array, CSV or text dataset.",
                                callback=existing_file),
    model: str = typer.Option(None, "-m", "--model", help="Target model (its tokenizer and "
                              "template count the tokens); default: the settings' model."),
    max_seq_len: int = typer.Option(None, "--max-seq-len", help="Default: the model's context."),
    max_per_code: int = typer.Option(10, "--max-per-code", help="Errors shown per code."),
    no_tokens: bool = typer.Option(False, "--no-tokens", help="Shape checks only (fast)."),
    epochs: int = typer.Option(None, "--epochs", help="Estimate training tokens for N epochs "
                               "(default: OpenAI's auto rule)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    dedupe: bool = typer.Option(False, "--dedupe", help="Write a copy without exact duplicate "
                                "examples to --out (the first one is kept)."),
    out: Path = typer.Option(None, "--out", "-o", help="Where --dedupe writes the copy."),
) -> None:
    """Check a training file: every error with line, field and code; exact token statistics.
    Only errors block training; warnings (duplicates, ...) are shown with counts and lines."""
    from afinar.data.validate import dedupe_file, validate_file

    if dedupe and out is None:
        raise typer.BadParameter("--dedupe needs --out FILE for the deduplicated copy",
                                 param_hint="--out")

    tok, model_id = None, None
    if not no_tokens:
        info, tok = _tokenizer(model)
        model_id = info.id
        max_seq_len = max_seq_len or info.context_length
    with status(f"validating {file.name}"):
        r = validate_file(file, tok, model=model_id, max_seq_len=max_seq_len,
                          max_per_code=max_per_code, n_epochs=epochs)
    if dedupe:
        kept, dropped = dedupe_file(file, out)
        note = f"--dedupe: wrote {out} ({kept} rows, {len(dropped)} duplicates dropped)"
        (err_console if as_json else console).print(note)
    if as_json:
        print_json(r.to_dict())
        raise typer.Exit(0 if r.ok else 1)
    console.print(f"[bold]{file}[/]: {r.format or '?'} format, {r.n_rows} rows, "
                  f"{r.n_examples} valid examples" + (f", model {model_id} (max {max_seq_len} "
                                                      "tokens)" if model_id else ""))
    _issue_table("errors", r.errors, r.counts, "red")
    _issue_table("warnings", r.warnings, r.warning_counts, "yellow")
    _stats_table(r.stats)
    if r.ok:
        console.print("[bold green]valid[/]: ready for training")
    else:
        console.print(f"[bold red]{r.n_errors} errors[/]: fix them before training")
        raise typer.Exit(1)


def _issue_table(title: str, shown: list[Issue], counts, colour: str) -> None:
    if not shown:
        return
    t = Table(Column("line", justify="right", no_wrap=True), Column("code", overflow="fold"),
              Column("field", overflow="fold"), Column("message", overflow="fold", ratio=1),
              title=f"[{colour}]{title}[/]", title_justify="left", box=box.SIMPLE_HEAD,
              pad_edge=False)
    for i in shown:
        t.add_row(str(i.line or "-"), i.code, Text(i.field or ""), Text(i.message))
    console.print(t)
    more = {c: n for c, n in counts.items() if n > sum(1 for i in shown if i.code == c)}
    if more:
        console.print("  all occurrences: " + ", ".join(f"{c} x{n}" for c, n in counts.items()))


def _stats_table(st: dict) -> None:
    rows = [(k, st.get(k)) for k in ("messages_per_example", "tokens_per_example",
                                     "trained_tokens_per_example")]
    rows = [(k, v) for k, v in rows if v]
    if rows:
        t = Table("per example", *(Column(c, justify="right", no_wrap=True) for c in
                                   ("min", "p5", "median", "mean", "p95", "max")),
                  box=box.SIMPLE_HEAD, pad_edge=False)
        for k, v in rows:
            t.add_row(k.replace("_per_example", ""), *(_fmt_num(v[c]) for c in
                                                       ("min", "p5", "median", "mean", "p95",
                                                        "max")))
        console.print(t)
    for k in ("total_tokens", "total_trained_tokens", "examples_over_max_seq_len",
              "default_epochs", "epochs", "estimated_training_tokens", "missing_system", "missing_user"):
        if k in st:
            console.print(f"  {k.replace('_', ' ')}: {st[k]:,}")
    if st.get("labels"):
        n = sum(st["labels"].values())
        console.print("  labels: " + ", ".join(f"{lab!r} {c} ({c / n:.0%})"
                                              for lab, c in st["labels"].items()))


def preview(
    file: Path = typer.Argument(..., callback=existing_file),
    n: int = typer.Option(3, "-n", help="How many examples."),
    model: str = typer.Option(None, "-m", "--model"),
    plain: bool = typer.Option(False, "--plain", help="Mark trained tokens with [[ ]] instead "
                               "of colour."),
) -> None:
    """Show examples exactly as training sees them, trained (loss) tokens highlighted."""
    from afinar.data.preview import example_segments
    from afinar.data.preview import plain as plain_text

    _, tok = _tokenizer(model)
    fmt, shown = None, 0
    for item in iter_rows(file):
        if shown >= n:
            break
        if isinstance(item, Issue):
            err_console.print(f"[yellow]skipped[/] {item}")
            continue
        fmt = fmt or detect(item.data)
        ex, issues = parse_example(item.data, item.line, None)
        if ex is None:
            err_console.print(f"[yellow]skipped line {item.line}[/]: "
                              + "; ".join(i.message for i in issues if i.severity == "error"))
            continue
        shown += 1
        for k, segs in enumerate(example_segments(tok, ex)):
            label = f"line {item.line}" + ((" (preferred)", " (non-preferred)")[k]
                                           if ex.format == "preference" else "")
            trained = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t, m in segs if m)
            if plain:
                print(f"--- {label}: [[trained]] ---")
                print(plain_text(segs))
            else:
                console.rule(f"{label}: [black on green3]trained[/] tokens, ~{trained}")
                txt = Text()
                for t, m in segs:
                    txt.append(t, style="black on green3" if m else "dim")
                console.print(txt)


def convert(
    file: Path = typer.Argument(..., help="A CSV, JSON or JSONL file (evals rows convert too).",
                                callback=existing_file),
    out: Path = typer.Option(..., "--out", "-o", help="The chat JSONL to write."),
    to: str = typer.Option("chat", "--to", help="Target format (chat)."),
    system: str = typer.Option(None, "--system", help="System prompt added to every example."),
    user_col: str = typer.Option(None, "--user-col", help="Column holding the user message."),
    assistant_col: str = typer.Option(None, "--assistant-col", help="Column holding the answer."),
) -> None:
    """Convert rows to chat examples ({"messages": [...]})."""
    from afinar.data.convert import convert_to_chat

    if to != "chat":
        raise typer.BadParameter("only --to chat is supported", param_hint="--to")
    s = convert_to_chat(file, out, system=system, user_col=user_col, assistant_col=assistant_col)
    for i in s.skipped[:20]:
        err_console.print(f"[yellow]skipped[/] {i}")
    console.print(f"wrote {s.written} chat examples to {s.out}"
                  + (f"; skipped {len(s.skipped)} rows" if s.skipped else ""))
    if s.skipped:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("preview")(preview)
    app.command("convert")(convert)
