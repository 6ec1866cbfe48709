"""Job, event and checkpoint records as OpenAI's API objects (shared by the CLI and server)."""

from __future__ import annotations

from typing import Any

from afinar.tuning.jobs import ORG
from afinar.tuning.methods import objective_of


def job_object(j) -> dict[str, Any]:
    hp = dict(j.hyperparameters or {})
    resolved = hp.get("resolved") or {}
    mtype = (j.method or {}).get("type", "lora")
    hyper = {k: resolved.get(k, hp.get(k, "auto")) for k in
             ("n_epochs", "batch_size", "learning_rate_multiplier")}
    objective = objective_of(mtype)  # what the method trains with names OpenAI's method type
    for k in (objective.hyperparameters if objective else ()):
        hyper[k] = resolved.get(k, hp.get(k, "auto"))
    kind = objective.openai_type if objective else "supervised"
    options = (j.method or {}).get(mtype) or {}
    # the objective's OpenAI sub-object (RFT: the grader, response_format, its hyperparameters)
    sub = objective.openai_method(options, hyper) if objective else {"hyperparameters": hyper}
    return {
        "object": "fine_tuning.job", "id": j.id, "model": j.model, "created_at": j.created_at,
        "finished_at": j.finished_at, "fine_tuned_model": j.fine_tuned_model,
        "organization_id": f"org-{ORG}", "result_files": list(j.result_files or []),
        "status": j.status, "validation_file": j.validation_file,
        "training_file": j.training_file, "hyperparameters": hyper,
        "trained_tokens": j.trained_tokens, "error": j.error, "seed": j.seed,
        "estimated_finish": j.estimated_finish, "integrations": [], "metadata": j.metadata_,
        "method": {"type": kind, kind: sub,
                   "afinar": {"method": mtype, "options": options, "resolved": resolved}},
    }


def event_object(e) -> dict[str, Any]:
    return {"object": "fine_tuning.job.event", "id": e.id, "created_at": e.created_at,
            "level": e.level, "message": e.message, "data": e.data or {}, "type": e.type}


def checkpoint_object(c, job) -> dict[str, Any]:
    return {"object": "fine_tuning.job.checkpoint", "id": c.id, "created_at": c.created_at,
            "fine_tuned_model_checkpoint": c.model_id, "fine_tuning_job_id": c.job_id,
            "metrics": c.metrics or {}, "step_number": c.step_number}
