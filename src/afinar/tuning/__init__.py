"""Fine-tuning: methods as registered recipes, jobs with OpenAI's shape, a worker that runs them,
a training loop that resumes exactly, checkpoints usable as models."""

from afinar.tuning.hparams import Hyperparameters, Resolved, resolve
from afinar.tuning.jobs import Jobs, model_id_for
from afinar.tuning.methods import REGISTRY as METHODS
from afinar.tuning.methods import get_method
from afinar.tuning.worker import run_worker, spawn_worker

__all__ = ["METHODS", "Hyperparameters", "Jobs", "Resolved", "get_method", "model_id_for",
           "resolve", "run_worker", "spawn_worker"]
