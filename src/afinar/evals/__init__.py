"""Evaluation that decides: strategies (base, few-shot, RAG, fine-tuned, both) answer the same
held-out cases; metrics with bootstrap intervals, measured cost, a forgetting check, and an
advisor that recommends from the measured table."""

from afinar.evals.config import EvalConfig, load_config, parse_config
from afinar.evals.runner import EvalRun, get_run, list_runs, run

__all__ = ["EvalConfig", "EvalRun", "get_run", "list_runs", "load_config", "parse_config", "run"]
