"""``afinar tune``: create, follow and manage fine-tuning jobs (``afinar worker`` runs them:
worker_cmd.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from afinar.cli.common import StatsProgress, console, err_console, existing_file, human_count, \
    print_json, progress_columns, status
from afinar.errors import InvalidRequest
from afinar.tuning.methods import METHODS

app = typer.Typer(help="Fine-tuning jobs (OpenAI's fine_tuning.jobs, locally).",
                  no_args_is_help=True)


def _auto(v: str | None, cast: type, name: str) -> int | float | str | None:
    """A hyperparameter flag: ``auto`` (or absent) as is, else a number of type ``cast``."""
    if v is None or v == "auto":
        return v
    try:
        return cast(v)
    except ValueError:
        raise typer.BadParameter(f"{name} must be {cast.__name__} or 'auto'") from None


def _parse_option(o: str) -> tuple[str, Any]:
    if "=" not in o:
        raise typer.BadParameter(f"--option takes KEY=VALUE, not {o!r}")
    k, v = o.split("=", 1)
    import json

    try:
        return k, json.loads(v)
    except ValueError:
        return k, v


@app.command("create")
def create(
    model: str = typer.Option(None, "--model", "-m", help="Base model id."),
    train: Path = typer.Option(None, "--train", help="Training file (chat/completion/preference "
                               "JSONL, or text for continued pretraining).",
                               callback=existing_file),
    val: Path = typer.Option(None, "--val", help="Validation file.", callback=existing_file),
    val_split: float = typer.Option(None, "--val-split", help="Hold out this fraction of train."),
    method: str = typer.Option(None, "--method", help="Tuning method: "
                               f"{', '.join(METHODS.names())} (default lora)."),
    epochs: str = typer.Option(None, "--epochs", help="n_epochs or auto."),
    batch_size: str = typer.Option(None, "--batch-size", help="batch_size or auto."),
    lr_multiplier: str = typer.Option(None, "--lr-multiplier", help="or auto."),
    max_seq_len: int = typer.Option(None, "--max-seq-len"),
    eval_every: int = typer.Option(None, "--eval-every", help="Sampled validation every N steps."),
    patience: int = typer.Option(None, "--patience", help="Early stopping patience (epochs)."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Also every N steps."),
    beta: str = typer.Option(None, "--beta", help="beta of dpo, kto, orpo, simpo, or auto."),
    hp_opt: list[str] = typer.Option(None, "--hp", help="Hyperparameter KEY=VALUE (e.g. "
                                     "loss_type=ipo, gamma=1.0, desirable_weight=1.5)."),
    grader: Path = typer.Option(None, "--grader", help="Grader spec (YAML/JSON, OpenAI's "
                                "grader object): the reward of --method grpo.",
                                callback=existing_file),
    option: list[str] = typer.Option(None, "--option", "-o", help="Method option KEY=VALUE "
                                     "(e.g. r=8, target_modules='[\"q_proj\"]')."),
    suffix: str = typer.Option(None, "--suffix"),
    seed: int = typer.Option(None, "--seed"),
    config: Path = typer.Option(None, "--config", "-c", help="YAML file with the same options.",
                                callback=existing_file),
    detach: bool = typer.Option(False, "--detach", help="Queue and return without following."),
    dedupe: bool = typer.Option(False, "--dedupe", help="Drop exact duplicate examples of the "
                                "training file (the first one is kept) before uploading it."),
    queue: str = typer.Option(None, "--queue", help="Queue to wait in (default: default); "
                              "run by `afinar worker --queue NAME`, e.g. on a GPU host."),
    processes: int = typer.Option(None, "--processes", help="Train on N processes (torch."
                                  "distributed: one GPU each on CUDA, gloo on the CPU)."),
) -> None:
    """Validate the data, queue a job, start a worker and follow it with a progress bar."""
    from afinar.tuning import Jobs, spawn_worker

    cfg: dict[str, Any] = {}
    if config:
        import yaml

        with open(config, encoding="utf-8") as f:  # a YAML error then names the file
            cfg = yaml.safe_load(f) or {}
        if not isinstance(cfg, dict):
            raise InvalidRequest(f"{config}: expected a mapping of options", param="config")
    flags = {"model": model, "train": str(train) if train else None,
             "val": str(val) if val else None, "val_split": val_split, "method": method,
             "epochs": epochs, "batch_size": batch_size, "lr_multiplier": lr_multiplier,
             "max_seq_len": max_seq_len, "eval_every": eval_every, "patience": patience,
             "checkpoint_every": checkpoint_every, "beta": beta, "suffix": suffix, "seed": seed,
             "dedupe": dedupe or None, "queue": queue, "processes": processes}
    flags["grader"] = str(grader) if grader else None
    opts = {**cfg, **{k: v for k, v in flags.items() if v is not None}}
    options = dict(cfg.get("options") or {})
    options.update(dict(_parse_option(o) for o in option or []))
    unknown = set(opts) - set(flags) - {"options", "hyperparameters"}
    if unknown:
        raise InvalidRequest(f"unknown options in {config}: {', '.join(sorted(unknown))}",
                             param="config")
    if not opts.get("train"):
        raise typer.BadParameter("--train is required (or train: in the YAML file)")
    from afinar.settings import get_settings

    model_id = opts.get("model") or get_settings().default_model
    mtype = opts.get("method") or "lora"
    hp = {"n_epochs": _auto(str(opts.get("epochs", "auto")), int, "epochs"),
          "batch_size": _auto(str(opts.get("batch_size", "auto")), int, "batch size"),
          "learning_rate_multiplier": _auto(str(opts.get("lr_multiplier", "auto")), float, "lr"),
          "beta": _auto(str(opts.get("beta", "auto")), float, "beta")}
    for k_cli, k_hp in (("max_seq_len", "max_seq_len"), ("eval_every", "eval_every_steps"),
                        ("patience", "early_stopping_patience"),
                        ("checkpoint_every", "checkpoint_every_steps")):
        if opts.get(k_cli) is not None:
            hp[k_hp] = int(opts[k_cli])
    from afinar.tuning.hparams import parse_hyperparameters

    hp.update(cfg.get("hyperparameters") or {})
    hp.update(dict(_parse_option(o) for o in hp_opt or []))
    parse_hyperparameters(hp)  # an unknown name or a bad value, before any work
    if opts.get("grader"):  # checked (errors name its file and field), stored with the job
        from afinar.graders import load_grader
        from afinar.graders.base import read_spec_file

        load_grader(Path(opts["grader"]))
        options["grader"] = read_spec_file(Path(opts["grader"]))
    from afinar.tuning.methods import get_method

    get_method(mtype, options)  # its options (grpo: a grader) before any work
    if opts.get("dedupe"):
        opts["train"] = _dedupe(Path(opts["train"]))
    _precheck(Path(opts["train"]), model_id, mtype, hp.get("max_seq_len"),
              Path(opts["val"]) if opts.get("val") else None)
    from afinar.store.files import Files

    files = Files()
    train_rec = files.create_from_path(opts["train"], "fine-tune")
    val_rec = files.create_from_path(opts["val"], "fine-tune") if opts.get("val") else None
    job = Jobs().create(model=model_id, training_file=train_rec.id,
                        validation_file=val_rec.id if val_rec else None,
                        method={"type": mtype, mtype: options}, hyperparameters=hp,
                        suffix=opts.get("suffix"), seed=opts.get("seed"),
                        val_split=opts.get("val_split"), queue=opts.get("queue"),
                        processes=opts.get("processes"))
    console.print(f"created [bold]{job.id}[/] ({escape(mtype)} on {escape(model_id)}, seed "
                  f"{job.seed})", soft_wrap=True)
    spawn_worker()
    if detach:
        console.print(f"follow it with: afinar tune wait {job.id}", markup=False,
                      soft_wrap=True)
        return
    _follow(job.id)


def _dedupe(train: Path) -> str:
    """A copy of ``train`` without exact duplicates (same file name, in a private temp dir)."""
    import atexit
    import shutil
    import tempfile

    from afinar.data.validate import dedupe_file

    tmp = Path(tempfile.mkdtemp(prefix="afinar-dedupe-"))
    atexit.register(shutil.rmtree, tmp, True)
    kept, dropped = dedupe_file(train, tmp / train.name)
    console.print(f"--dedupe: {len(dropped)} duplicate examples dropped"
                  + (f" (lines {', '.join(map(str, dropped[:10]))}"
                     f"{', ...' if len(dropped) > 10 else ''})" if dropped else "")
                  + f"; {kept} kept")
    return str(tmp / train.name)


def _precheck(train: Path, model_id: str, method: str, max_seq_len: int | None,
              val: Path | None = None) -> None:
    """Refuse data the validator rejects, or the method cannot train on, before a job exists."""
    from afinar.data.validate import validate_file
    from afinar.models import Catalog, load_tokenizer
    from afinar.tuning.jobs import check_data
    from afinar.tuning.samples import DatasetRejected, expected_format

    kind = METHODS.get(method).data_kind
    check_data(method, kind, (train, train.name), (val, val.name) if val else None)
    info = Catalog().get(model_id)
    with status(f"validating {train.name} for {model_id}"):
        tok = load_tokenizer(info)
        r = validate_file(train, tok, max_seq_len=max_seq_len or min(info.context_length or 2048,
                                                                      2048),
                          expected_format=expected_format(kind))
    for line in r.warning_lines():
        err_console.print(f"  warning: {line}")
    if not r.ok:
        for e in r.errors[:10]:
            err_console.print(f"  {e}")
        raise DatasetRejected(r, "training_file", train.name)


def _phase(status: str, started: bool, metrics: bool) -> str:
    """What the job is doing, for the progress line: the model loads between the job turning
    ``running`` and the runner's "Fine-tuning started" (tens of seconds on a CPU)."""
    if metrics or started:
        return "training"
    return {"running": "loading model", "validating_files": "validating"}.get(status, status)


def _follow(job_id: str) -> str:
    """Show events and a progress bar until the job ends; Ctrl-C detaches (the job goes on).

    The bar line keeps its step count and ETA within 80 columns; the latest metrics (epoch,
    losses, accuracy, speed) are a second line under it."""
    from afinar.tuning import Jobs, spawn_worker

    jobs = Jobs()
    job = jobs.get(job_id)  # an unknown id fails here, before any bar is drawn
    err_console.print(f"following {job_id} (Ctrl-C detaches; the job goes on)", soft_wrap=True,
                      markup=False)
    seq, last_spawn, started, got_metrics = 0, time.time(), False, False
    try:
        with StatsProgress(*progress_columns("steps"), console=err_console,
                           transient=False) as bar:
            task = bar.add_task(_phase(job.status, False, False), total=None)
            while True:
                for ev in jobs.events(job_id, after_seq=seq):
                    seq = ev.seq
                    if ev.type == "metrics" and ev.data:
                        d = ev.data
                        got_metrics = True
                        stats = (f"epoch {d.get('epoch')}  loss {d['train_loss']:.3f}  "
                                 f"acc {d.get('train_mean_token_accuracy', 0):.2f}")
                        if d.get("valid_loss") is not None:
                            stats += f"  val {d['valid_loss']:.3f}"
                        stats += f"  {d.get('tokens_per_second', 0):.0f} tok/s"
                        bar.stats = stats
                        bar.update(task, completed=d["step"], total=d.get("total_steps"))
                    else:
                        started = started or ev.message.startswith(("Fine-tuning started",
                                                                    "Resumed from step"))
                        colour = {"warn": "yellow", "error": "red"}.get(ev.level, "dim")
                        bar.console.print(f"[{colour}]{escape(ev.message)}[/]", soft_wrap=True)
                job = jobs.get(job_id)
                bar.update(task, description=_phase(job.status, started, got_metrics))
                if job.status in ("succeeded", "failed", "cancelled", "paused"):
                    break
                if job.status in ("queued", "validating_files") and time.time() - last_spawn > 5:
                    spawn_worker()  # the previous worker may have exited just before we queued
                    last_spawn = time.time()
                time.sleep(0.5)
    except KeyboardInterrupt:
        err_console.print(f"detached; the job goes on. Follow it with: afinar tune wait {job_id}",
                          soft_wrap=True, markup=False)
        raise typer.Exit(130) from None
    job = jobs.get(job_id)
    colour = "green" if job.status == "succeeded" else "red"
    console.print(f"[{colour}]{job.status}[/]" + escape(
        (f": {job.fine_tuned_model}" if job.fine_tuned_model else "")
        + (f" ({job.error['message']})" if job.error else "")), soft_wrap=True)
    if job.status == "failed":
        raise typer.Exit(1)
    return job.status


def _job_dict(j) -> dict[str, Any]:
    from afinar.tuning.serialize import job_object

    return job_object(j)


@app.command("list")
def list_jobs(limit: int = typer.Option(20), as_json: bool = typer.Option(False, "--json")):
    """Recent jobs."""
    from afinar.tuning import Jobs

    jobs = Jobs().list(limit=limit)
    if as_json:
        print_json([_job_dict(j) for j in jobs])
        return
    # ids are never cut (they are what you copy): the job id, with its model under it (the
    # fine-tuned one once there is one), and the other columns short
    t = Table(Column("job / model", overflow="fold"), Column("status", no_wrap=True),
              Column("method", no_wrap=True), Column("tokens", justify="right", no_wrap=True),
              box=box.SIMPLE_HEAD, pad_edge=False)
    for j in jobs:
        t.add_row(Text.assemble(j.id, "\n", (j.fine_tuned_model or f"{j.model} (base)", "dim")),
                  j.status, j.method.get("type") or "",
                  human_count(j.trained_tokens) if j.trained_tokens else "")
    console.print(t)


@app.command("show")
def show(job_id: str) -> None:
    """A job as OpenAI's fine_tuning.job object (JSON)."""
    from afinar.tuning import Jobs

    print_json(_job_dict(Jobs().get(job_id)))


@app.command("events")
def events(job_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """The job's events, oldest first."""
    from afinar.tuning import Jobs

    evs = Jobs().events(job_id)
    if as_json:
        from afinar.tuning.serialize import event_object

        print_json([event_object(e) for e in evs])
        return
    for e in evs:
        console.print(f"{time.strftime('%H:%M:%S', time.localtime(e.created_at))} "
                      f"[{e.level}] {e.message}")


@app.command("checkpoints")
def checkpoints(job_id: str) -> None:
    """Checkpoints (each usable as a model id)."""
    from afinar.tuning import Jobs

    t = Table(Column("step", justify="right"), Column("model id", overflow="fold"),
              Column("train loss", justify="right"), Column("valid loss", justify="right"),
              box=box.SIMPLE_HEAD, pad_edge=False)
    for c in Jobs().checkpoints(job_id):
        m = c.metrics or {}
        t.add_row(str(c.step_number), c.model_id, f"{m.get('train_loss') or 0:.4f}",
                  "" if m.get("full_valid_loss") is None else f"{m['full_valid_loss']:.4f}")
    console.print(t)


@app.command("cancel")
def cancel(job_id: str) -> None:
    from afinar.tuning import Jobs

    console.print(f"{job_id}: {Jobs().cancel(job_id).status}")


@app.command("pause")
def pause(job_id: str) -> None:
    from afinar.tuning import Jobs

    console.print(f"{job_id}: pause requested ({Jobs().pause(job_id).status})")


@app.command("resume")
def resume(job_id: str, detach: bool = typer.Option(False, "--detach")) -> None:
    from afinar.tuning import Jobs, spawn_worker

    Jobs().resume(job_id)
    spawn_worker()
    if not detach:
        _follow(job_id)


@app.command("wait")
def wait(job_id: str) -> None:
    """Follow a job until it ends."""
    _follow(job_id)


# ``tune rebase``: its own module, given ``_follow`` (it does not import this one back)
from afinar.cli import tune_rebase_cmd  # noqa: E402

tune_rebase_cmd.register(app, _follow)
