"""``afinar models``: list, add, show and remove catalog models."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.table import Column, Table

from afinar.cli.common import console, human_bytes, human_count, print_json
from afinar.models import Catalog, ModelInfo
from afinar.models.export import EXPORTERS, QUANTS, gguf_formats

app = typer.Typer(help="The model catalog: built-in and registered models.", no_args_is_help=True)


def _row(m: ModelInfo) -> dict:
    return {
        "id": m.id, "kind": m.kind, "format": m.format, "parameters": m.parameters,
        "context_length": m.context_length, "source": m.source, "path": str(m.path),
        "size_bytes": m.size_bytes, "available": m.available,
    }


@app.command("list")
def list_models(
    kind: str = typer.Option(None, help="Only chat or embedding models."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    paths: bool = typer.Option(False, "--paths", help="Add a column with each model's path."),
) -> None:
    """List every model afinar can use: id, kind, parameters, context, source, size on disk."""
    models = Catalog().list(kind)
    if as_json:
        print_json([_row(m) for m in models])
        return
    # ids and numbers whole at 80 columns; the source (and --paths) fold instead
    t = Table(Column("id", no_wrap=True), Column("kind", no_wrap=True),
              Column("params", justify="right", no_wrap=True),
              Column("context", justify="right", no_wrap=True),
              Column("size", justify="right", no_wrap=True), Column("source", overflow="fold"),
              box=box.SIMPLE_HEAD, pad_edge=False)
    if paths:
        t.add_column("path", overflow="fold")
    for m in models:
        row = [m.id, m.kind, human_count(m.parameters), str(m.context_length or "-"),
               human_bytes(m.size_bytes), f"{m.source}/{m.format}"]
        if paths:
            row.append(str(m.path) if m.available else f"[red]{m.path}[/]")
        t.add_row(*row)
    console.print(t)


@app.command("add")
def add(
    name: str = typer.Argument(..., help="The id to register the model under."),
    path: Path = typer.Argument(..., help="A Hugging Face folder, sentence-transformers folder "
                                          "or .gguf file; an Ollama models folder (blobs/ + "
                                          "manifests/) or a Modelfile whose FROM is a GGUF; a "
                                          "PEFT adapter folder (adapter_config.json)."),
    kind: str = typer.Option(None, help="chat or embedding (detected when omitted)."),
    base: str = typer.Option(None, "--base", help="A PEFT adapter's base model id (default: "
                             "the catalog model its adapter_config.json names)."),
    ollama_model: str = typer.Option(None, "--ollama-model", help="NAME[:TAG] in an Ollama "
                                     "models folder holding several."),
) -> None:
    """Register a local model under NAME (models made elsewhere: template contract checked)."""
    from afinar.models.export.importing import add_model

    m, warnings = add_model(name, path, kind, base=base, ollama_model=ollama_model)
    for w in warnings:
        console.print(f"  [yellow]warning[/] {w}", soft_wrap=True)
    what = f"fine-tune of {m.base_model}" if m.base_model else m.format
    console.print(f"added [bold]{m.id}[/]: {m.kind}, {what}, "
                  f"{human_count(m.parameters)} parameters, context {m.context_length}")


@app.command("show")
def show(name: str) -> None:
    """Details of one model as JSON."""
    m = Catalog().get(name)
    print_json({**_row(m), "info": m.info, "created_at": m.created_at})


@app.command("remove")
def remove(name: str) -> None:
    """Unregister a model (its files are left where they are)."""
    Catalog().remove(name)
    console.print(f"removed {name}")


def _when(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


@app.command("alias")
def alias(
    name: str = typer.Argument(None, help="The alias: the stable name clients send as model."),
    model: str = typer.Argument(None, help="The model id it stands for (set or move)."),
    list_: bool = typer.Option(False, "--list", help="Every alias and its model."),
    delete: bool = typer.Option(False, "--delete", help="Delete alias NAME."),
    history: bool = typer.Option(False, "--history", help="Show NAME's moves: who, when, "
                                 "from, to, why."),
    reason: str = typer.Option(None, "--reason", help="Why (kept in the history)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Point alias NAME at MODEL (create or move it), list aliases, delete one, or show its
    history. Requests naming the alias follow a move at once."""
    from afinar.errors import InvalidRequest
    from afinar.models.aliases import Aliases

    aliases = Aliases()
    modes = [m for m, on in (("--list", list_), ("--delete", delete), ("--history", history))
             if on]
    if len(modes) > 1:
        raise InvalidRequest(f"give one of {', '.join(modes)}", param="alias")
    if list_:
        if name or model:
            raise InvalidRequest("--list takes no NAME or MODEL", param="alias")
        rows = aliases.list()
        if as_json:
            print_json([{"name": a.name, "model": a.model, "created_at": a.created_at,
                         "updated_at": a.updated_at} for a in rows])
            return
        if not rows:
            console.print("no aliases (set one with `afinar models alias NAME MODEL`)")
            return
        t = Table(Column("alias", overflow="fold"), Column("model", overflow="fold"),
                  Column("moved", no_wrap=True), box=box.SIMPLE_HEAD, pad_edge=False)
        for a in rows:
            t.add_row(a.name, a.model, _when(a.updated_at))
        console.print(t)
        return
    if not name:
        raise InvalidRequest("give NAME (and MODEL to set it), or --list", param="alias")
    if delete or history:
        if model:
            raise InvalidRequest(f"{modes[0]} takes NAME only", param="alias")
        if delete:
            gone = aliases.delete(name, reason=reason)
            console.print(f"deleted alias {name} (it stood for {gone.model})", markup=False)
            return
        rows = aliases.history(name)
        if not rows:
            aliases.get(name)  # unknown: the one error naming the known aliases
        if as_json:
            print_json([r.to_dict() for r in rows])
            return
        for r in rows:
            move = (f"{r.from_model or '-'} -> {r.to_model or '-'}" if r.action != "refuse"
                    else f"kept {r.from_model}, refused {r.to_model}")
            console.print(f"{_when(r.created_at)}  {r.action:<7}  {move}  by {r.actor}",
                          markup=False, soft_wrap=True)
            if r.reason:
                console.print(f"    {r.reason}", markup=False)
        return
    if not model:
        a = aliases.get(name)
        console.print(f"{a.name} -> {a.model}", markup=False)
        return
    before = aliases.find(name)
    a = aliases.set(name, model, reason=reason)
    if before is None:
        console.print(f"alias {a.name} -> {a.model}", markup=False)
    else:
        console.print(f"moved alias {a.name}: {before.model} -> {a.model}", markup=False)


def _print_checks(checks) -> None:
    for c in checks:
        mark = "[yellow]warning[/]" if c.warning else "[green]ok[/]"
        console.print(f"  {mark} {c.name}: {c.detail}", soft_wrap=True)


def _formats_help() -> str:
    return "; ".join(f"{name}: {cls.help}" for name, cls in EXPORTERS.items())


@app.command("export")
def export(
    name: str = typer.Argument(..., help="A model id: a base model or a fine-tune (ft:...)."),
    out: Path = typer.Option(None, "--out", "-o", help="A new or empty folder (default: "
                             "./MODEL-FORMAT)."),
    fmt: str = typer.Option(None, "--format", "-f", help=f"{_formats_help()} (verified before "
                            "done). Without it: a fine-tune as merged safetensors, or its "
                            "adapter folder with --adapter, unverified."),
    quant: str = typer.Option(None, "--quant", help=f"GGUF weights ({', '.join(gguf_formats())}"
                              f"): {', '.join(QUANTS)} (default f32)."),
    merged: bool = typer.Option(True, "--merged/--adapter",
                                help="Without --format: merge into the base (default) or copy "
                                     "the adapter."),
) -> None:
    """Write a model to OUT in a format other tools load, checked before it is called done."""
    if fmt is not None:
        from afinar.models.export import check_options, export_model

        check_options(fmt, quant)  # before any model loads
        dest = out or Path(f"{name.replace(':', '-')}-{fmt}")
        path, checks = export_model(name, fmt, dest, quant)
        _print_checks(checks)
        console.print(f"exported {name} as {fmt} to {path}", soft_wrap=True)
        return
    if out is None:
        raise typer.BadParameter("--out is needed without --format", param_hint="--out")
    if quant is not None:
        raise typer.BadParameter("--quant needs --format gguf or ollama", param_hint="--quant")
    if merged:
        from afinar.models.loader import export_merged

        path = export_merged(name, out)
    else:
        import shutil

        src = Catalog().get(name).path
        path = Path(shutil.copytree(src, out))
    console.print(f"exported {name} to {path}")


@app.command("verify")
def verify(path: Path = typer.Argument(..., help="A folder written by `afinar models export "
                                                 "--format`.")) -> None:
    """Re-run an export's checks (template contract, llama.cpp vs transformers, stop tokens,
    Modelfile TEMPLATE) against the catalog model it came from."""
    from afinar.models.export import verify_export

    _print_checks(verify_export(path))
    console.print(f"{path}: verified", soft_wrap=True)
