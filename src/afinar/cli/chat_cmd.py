"""``afinar chat``: one question, or an interactive session."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from afinar.cli.common import err_console, existing_file, status
from afinar.models import Generator, LoadedModel, ModelCache, SamplingParams
from afinar.settings import get_settings

_cache = ModelCache(max_models=1)


def _load(model_id: str) -> LoadedModel:
    with status(f"loading {model_id}") as st:
        lm = _cache.get(model_id, progress=lambda msg: st.update(msg))
    how = {"gguf": "converted from GGUF", "gguf-cache": "from the converted cache",
           "hf": "from its folder", "adapter": "with its adapter"}[lm.loaded_from]
    err_console.print(f"[dim]{model_id} loaded {how} in {lm.load_seconds:.1f}s on {lm.device}[/]")
    return lm


def _answer(gen: Generator, messages: list[dict], params: SamplingParams) -> str:
    t0 = time.perf_counter()
    s = gen.stream(messages, params)
    for delta in s:
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    r = s.result
    dt = time.perf_counter() - t0
    err_console.print(
        f"[dim]{r.prompt_tokens} prompt + {r.completion_tokens} completion tokens, "
        f"{r.completion_tokens / dt:.1f} tok/s, finish: {r.finish_reason}, seed {r.seed}[/]")
    return r.text


def chat(
    question: str = typer.Argument(None, help="Ask one question; omit for an interactive chat."),
    model: str = typer.Option(None, "-m", "--model", help="Model id (default: the settings')."),
    system: str = typer.Option(None, "--system", "-s", help="System prompt."),
    temperature: float = typer.Option(
        None, min=0.0, max=2.0,
        help="0 = greedy (default: the model's recommended, as the server uses)."),
    top_p: float = typer.Option(None, "--top-p", min=0.0, max=1.0,
                                help="Default: the model's recommended."),
    max_tokens: int = typer.Option(512, "--max-tokens"),
    stop: list[str] = typer.Option(None, "--stop", help="Stop string (repeatable, up to 4)."),
    seed: int = typer.Option(None, help="Same seed, same answer."),
    tools: Path = typer.Option(None, "--tools", help="YAML file of HTTP tools the model may "
                               "call (one question only).", callback=existing_file),
    tool_choice: str = typer.Option("auto", "--tool-choice", help="auto or required."),
    max_calls: int = typer.Option(3, "--max-calls", help="Tool calls allowed per answer."),
) -> None:
    """Chat with a model: streams the answer token by token."""
    from afinar.models import Catalog

    model = model or get_settings().default_model
    from pydantic import ValidationError

    from afinar.errors import InvalidRequest

    try:  # what is not given: the model's recommendation
        params = SamplingParams.with_defaults(
            {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
             "stop": stop or [], "seed": seed}, Catalog().sampling_defaults(model))
    except ValidationError as e:
        err = e.errors()[0]
        raise InvalidRequest(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: "
                             f"{err['msg']}") from None
    if tools is not None and question is None:
        raise typer.BadParameter("--tools needs a question", param_hint="--tools")
    gen = Generator(_load(model))
    base: list[dict] = [{"role": "system", "content": system}] if system else []
    if tools is not None:
        from afinar.rag.tools import ToolRegistry, answer_with_tools, model_generate

        a = answer_with_tools(model_generate(gen), base + [{"role": "user", "content": question}],
                              ToolRegistry.from_yaml(tools), max_calls, tool_choice)
        for c in a.calls:
            err_console.print(f"[dim]tool {c.name}({c.arguments}) -> "
                              f"{'ok' if c.ok else 'error'} in {c.seconds:.2f}s: {c.result[:200]}[/]")
        print(a.text)
        return
    if question is not None:
        _answer(gen, base + [{"role": "user", "content": question}], params)
        return
    err_console.print("[dim]interactive chat: /reset clears the history, Ctrl-D exits[/]")
    history = list(base)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            err_console.print()
            return
        if not line.strip():
            continue
        if line.strip() == "/reset":
            history = list(base)
            err_console.print("[dim]history cleared[/]")
            continue
        if line.strip() in ("/exit", "/quit"):
            return
        history.append({"role": "user", "content": line})
        sys.stdout.write("assistant> ")
        history.append({"role": "assistant", "content": _answer(gen, history, params)})
