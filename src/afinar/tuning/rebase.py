"""Re-basing a fine-tune (``afinar tune rebase``): a finished job's recipe run again on another
base model.

The recipe is what the job record and the fine-tune's manifest hold: the data files by sha256
(read back from the blob store, so a deleted file record does not lose them), the method and
its options, the hyperparameters as they were *asked* (``auto`` stays ``auto`` and is resolved
again for the new base and the data: the resolved values of the old job are not reused), the
seed, the suffix, the validation split and the queue.

Before any job exists the data is checked for the new base: validated with its tokenizer and
its own chat template (``data.validate.validate_file``: the encoding training will use), and
checked for what the new template cannot express (``template_gaps``): system messages it drops
or refuses (a template without a system role, such as Gemma's), tool calls and tool definitions
it renders without their names. Either is one error naming the lines.

Comparing the old fine-tune with the new one is an evaluation, above this floor:
``afinar.evals.compare.fine_tune_comparison`` (the CLI's ``--eval``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afinar.data.formats import content_text
from afinar.data.reader import Row, iter_rows
from afinar.data.validate import ValidationReport, validate_file
from afinar.errors import InvalidRequest, NotFound
from afinar.models.catalog import Catalog
from afinar.models.finetuned import read_manifest
from afinar.models.templates import prepare_messages
from afinar.settings import Settings, get_settings
from afinar.store.files import Files
from afinar.store.tables import JobRecord
from afinar.tuning.jobs import Jobs, check_data
from afinar.tuning.methods import get_method
from afinar.tuning.samples import DatasetRejected

LINES_SHOWN = 5


class TemplateCannotExpress(InvalidRequest):
    code = "template_cannot_express"


@dataclass
class Recipe:
    """What a finished job was trained from: enough to train it again on another base."""

    job_id: str
    base_model: str
    fine_tuned_model: str
    datasets: dict[str, str]  # training_file / validation_file -> sha256
    filenames: dict[str, str]
    method: dict[str, Any]
    hyperparameters: dict[str, Any]  # as requested: auto stays auto
    seed: int
    suffix: str | None
    val_split: float | None
    queue: str
    owner: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "owner"}


@dataclass
class RebasePlan:
    recipe: Recipe
    new_base: str
    files: dict[str, str]  # training_file / validation_file -> file id holding that sha256
    reports: dict[str, ValidationReport]  # the data validated for the new base


def _job_of(ref: str, jobs: Jobs, catalog: Catalog) -> JobRecord:
    if ref.startswith("ftjob-"):
        return jobs.get(ref)
    try:
        info = catalog.get(ref)
    except NotFound:
        raise NotFound(f"no fine-tuning job or model {ref!r}", param="job") from None
    job_id = read_manifest(info.path).get("job") if info.path.is_dir() else None
    job_id = job_id or (info.info or {}).get("job")
    if not job_id:
        raise InvalidRequest(f"{ref} was not trained by an afinar job (its manifest names "
                             "none): there is no recipe to run again", param="job")
    return jobs.get(job_id)


def recipe_of(ref: str, settings: Settings | None = None) -> Recipe:
    """The recipe of a finished job, given the job id or one of its models (the fine-tuned
    model or a checkpoint)."""
    settings = settings or get_settings()
    jobs, catalog = Jobs(settings), Catalog(settings)
    job = _job_of(ref, jobs, catalog)
    if job.status != "succeeded" or not job.fine_tuned_model:
        raise InvalidRequest(f"job {job.id} is {job.status}: only a finished (succeeded) job's "
                             "recipe can be run again", param="job")
    manifest = read_manifest(catalog.get(job.fine_tuned_model).path)
    files = Files(settings)
    datasets, names = dict(manifest.get("datasets") or {}), {}
    for key in ("training_file", "validation_file"):
        fid = getattr(job, key)
        if not fid:
            continue
        try:
            rec = files.get(fid)
            names[key] = rec.filename
            datasets.setdefault(key, rec.sha256)
        except NotFound:
            names[key] = f"{key}.jsonl"
        if key not in datasets:
            raise InvalidRequest(f"job {job.id}: its {key} is gone and its manifest holds no "
                                 "sha256 for it", param="job")
    asked = {k: v for k, v in (job.hyperparameters or {}).items() if k != "resolved"}
    return Recipe(job.id, job.model, job.fine_tuned_model, datasets, names, dict(job.method),
                  asked, int(job.seed), job.suffix, (job.info or {}).get("val_split"),
                  job.queue or "default",
                  {"project_id": job.project_id, "owner_key_id": job.owner_key_id,
                   "owner_groups": job.owner_groups})


def _stored_file(files: Files, recipe: Recipe, key: str) -> str:
    """A file id whose bytes have the recipe's sha256: the job's own file when it still holds
    them, else a new record over the blob."""
    digest = recipe.datasets[key]
    try:
        job = Jobs(files.settings).get(recipe.job_id)
        rec = files.get(getattr(job, key))
        if rec.sha256 == digest:
            return rec.id
    except NotFound:
        pass
    if not files.blobs.exists(digest):
        raise InvalidRequest(f"job {recipe.job_id}: its {key} (sha256 {digest[:12]}…) is no "
                             "longer in the blob store", param="job")
    with files.blobs.open(digest) as f:
        return files.create(f, recipe.filenames.get(key, f"{key}.jsonl"), "fine-tune").id


def _conversations(data: Any) -> tuple[list[dict], list[dict] | None] | None:
    """A row's messages (a preference row: its input and preferred answer) and tools."""
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("messages"), list):
        return data["messages"], data.get("tools")
    inp = data.get("input")
    if isinstance(inp, dict) and isinstance(inp.get("messages"), list):
        chosen = data.get("preferred_output") or []
        return inp["messages"] + (chosen if isinstance(chosen, list) else [chosen]), \
            inp.get("tools")
    return None


def _render(tok, messages: list[dict], tools) -> str:
    prepared, tools = prepare_messages(tok, messages, tools)
    return tok.apply_chat_template(prepared, tools=tools, tokenize=False)


def _gaps_of(tok, messages: list[dict], tools) -> list[str]:
    """What of one conversation the template loses: ``system``, ``tool_calls``, ``tools``."""
    has_system = any(m.get("role") in ("system", "developer") and content_text(m.get("content"))
                     .strip() for m in messages if isinstance(m, dict))
    try:
        text = _render(tok, messages, tools)
    except Exception:  # noqa: BLE001 - jinja's raise_exception and template bugs
        if has_system:
            try:
                _render(tok, [m for m in messages if m.get("role") not in ("system",
                                                                            "developer")], tools)
                return ["system"]  # it renders once the system messages are gone
            except Exception:  # noqa: BLE001 - another problem: the validator reports it
                return []
        return []
    gaps = []
    if any(m.get("role") in ("system", "developer")
           and content_text(m.get("content")).strip() not in text for m in messages):
        gaps.append("system")
    names = [(c.get("function") or {}).get("name") for m in messages
             for c in (m.get("tool_calls") or []) if isinstance(c, dict)]
    if any(n and n not in text for n in names):
        gaps.append("tool_calls")
    tool_names = [(t.get("function") or t).get("name") for t in tools or []
                  if isinstance(t, dict)]
    if any(n and n not in text for n in tool_names):
        gaps.append("tools")
    return gaps


GAP_TEXT = {
    "system": ("has no system role (it drops or refuses system messages)",
               "fold the system message into the first user turn, or choose another base"),
    "tool_calls": ("cannot express tool calls (their names do not appear in what it renders)",
                   "choose a base whose template renders tool calls"),
    "tools": ("cannot express tool definitions (their names do not appear in what it renders)",
              "choose a base whose template renders tools"),
}


def template_gaps(tok, path: Path) -> dict[str, list[int]]:
    """For each thing the tokenizer's chat template cannot express (``GAP_TEXT``), the lines of
    the examples that need it."""
    out: dict[str, list[int]] = {}
    for row in iter_rows(path):
        if not isinstance(row, Row):
            continue
        conv = _conversations(row.data)
        if conv is None:
            continue
        for gap in _gaps_of(tok, [m for m in conv[0] if isinstance(m, dict)], conv[1]):
            out.setdefault(gap, []).append(row.line)
    return out


def check_expressible(tok, path: Path, model: str, name: str, param: str) -> None:
    gaps = template_gaps(tok, path)
    if not gaps:
        return
    parts = []
    for gap, lines in gaps.items():
        what, fix = GAP_TEXT[gap]
        shown = ", ".join(map(str, lines[:LINES_SHOWN])) + (", ..." if len(lines) > LINES_SHOWN
                                                             else "")
        parts.append(f"{len(lines)} examples need what it {what} (line"
                     f"{'s' if len(lines) > 1 else ''} {shown}): {fix}")
    raise TemplateCannotExpress(f"{name}: the chat template of {model} " + "; ".join(parts),
                                param=param)


def plan(ref: str, new_base: str, settings: Settings | None = None) -> RebasePlan:
    """Everything checked for re-running ``ref``'s recipe on ``new_base``, nothing written but
    (when a data file's record is gone) a file record over its blob."""
    from afinar.models.loader import load_tokenizer

    settings = settings or get_settings()
    recipe = recipe_of(ref, settings)
    info = Catalog(settings).get(new_base)
    if info.kind != "chat":
        raise InvalidRequest(f"{new_base} is not a chat model", param="model")
    if new_base == recipe.base_model:
        raise InvalidRequest(f"job {recipe.job_id} was trained on {new_base} already; name "
                             "another base", param="model")
    mtype = recipe.method.get("type", "lora")
    method = get_method(mtype, recipe.method.get(mtype))
    files = Files(settings)
    ids = {key: _stored_file(files, recipe, key) for key in recipe.datasets}
    paths = {key: files.path(fid) for key, fid in ids.items()}
    shown = {key: recipe.filenames.get(key, key) for key in ids}
    check_data(mtype, method.data_kind, (paths["training_file"], shown["training_file"]),
               (paths["validation_file"], shown["validation_file"])
               if "validation_file" in paths else None)
    tok = load_tokenizer(info)
    max_len = (recipe.hyperparameters.get("max_seq_len")
               or min(info.context_length or 2048, 2048))
    reports = {}
    for key, path in paths.items():
        check_expressible(tok, path, new_base, shown[key], key)
        r = validate_file(path, tok, model=new_base, max_seq_len=max_len,
                          role="training" if key == "training_file" else "validation")
        if not r.ok:
            raise DatasetRejected(r, key, f"{shown[key]} (for {new_base})")
        reports[key] = r
    return RebasePlan(recipe, new_base, ids, reports)


def start(p: RebasePlan, settings: Settings | None = None) -> JobRecord:
    """The new job: the recipe on the new base, queued (a worker re-encodes the data with the
    new base's template and resolves the ``auto`` hyperparameters again)."""
    settings = settings or get_settings()
    r = p.recipe
    jobs = Jobs(settings)
    job = jobs.create(model=p.new_base, training_file=p.files["training_file"],
                      validation_file=p.files.get("validation_file"), method=r.method,
                      hyperparameters=r.hyperparameters, suffix=r.suffix, seed=r.seed,
                      val_split=r.val_split, queue=r.queue,
                      owner={k: v for k, v in r.owner.items() if v is not None})
    info = {**(job.info or {}), "rebased_from": r.job_id}
    jobs.update(job.id, info=info)
    jobs.event(job.id, "info", "message", f"Rebased from {r.job_id} ({r.base_model} -> "
               f"{p.new_base}): same data, method, hyperparameters as asked and seed "
               f"{r.seed}")
    return jobs.get(job.id)


def rebase(ref: str, new_base: str, settings: Settings | None = None) -> tuple[RebasePlan,
                                                                                JobRecord]:
    p = plan(ref, new_base, settings)
    return p, start(p, settings)


__all__ = ["GAP_TEXT", "RebasePlan", "Recipe", "TemplateCannotExpress", "check_expressible",
           "plan", "rebase", "recipe_of", "start", "template_gaps"]
