"""``afinar graders validate|run``: a grader file (OpenAI's grader object in YAML or JSON) checked,
or run on one sample (``afinar.graders``; the same as ``POST /v1/fine_tuning/alpha/graders/
validate`` and ``/run``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from afinar.cli.common import console, existing_file, print_json
from afinar.errors import InvalidRequest

app = typer.Typer(help="Graders in OpenAI's shape: check a grader file, grade one sample.",
                  no_args_is_help=True)


def _item(text: str) -> dict:
    try:
        item = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidRequest(f"--item: not JSON ({e.msg} at column {e.colno})",
                             param="item") from None
    if not isinstance(item, dict):
        raise InvalidRequest("--item: must be a JSON object", param="item")
    return item


@app.command("validate")
def validate(
    file: Path = typer.Argument(..., help="A grader: .yaml, .yml or .json.",
                                callback=existing_file),
    as_json: bool = typer.Option(False, "--json", help="Print {\"grader\": ...} as the API."),
) -> None:
    """Check a grader file; a bad field is one error line naming it."""
    from afinar.graders import load_grader

    g = load_grader(file)
    if as_json:
        print_json({"grader": g.to_dict()})
        return
    subs = getattr(g, "graders", None)
    more = f": {', '.join(f'{k} ({s.type})' for k, s in subs.items())}" if subs else ""
    console.print(f"ok: {g.name} ({g.type}){more}", markup=False)


@app.command("run")
def run(
    file: Path = typer.Argument(..., help="A grader: .yaml, .yml or .json.",
                                callback=existing_file),
    sample: str = typer.Option(..., "--sample", help="The model's answer (sample.output_text; "
                               "sample.output_json when it is JSON)."),
    item: str = typer.Option("{}", "--item", help="The item as a JSON object ({{ item.x }})."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's /graders/run object."),
) -> None:
    """Grade one sample against one item."""
    from afinar.graders import load_grader, run_object, sample_from_text

    the_item = _item(item)
    g = load_grader(file)
    out = run_object(g.grade(sample_from_text(sample), the_item))
    if as_json:
        print_json(out)
        return
    meta = out["metadata"]
    console.print(f"reward {out['reward']:.4g}  {meta['name']} ({meta['type']}, "
                  f"{meta['execution_time']:.3f} s)", markup=False)
    for k, v in out["sub_rewards"].items():
        console.print(f"  {k}: {v:.4g}", markup=False)
    for k, v in meta["errors"].items():
        if v is True:
            why = meta["errors"].get(f"{k}_details", "")
            console.print(f"  {k}" + (f": {why}" if why else ""), markup=False)
    if meta["token_usage"]:
        u = meta["token_usage"]
        console.print(f"  {meta['sampled_model_name']}: {u['prompt_tokens']} prompt + "
                      f"{u['completion_tokens']} completion tokens", markup=False)
