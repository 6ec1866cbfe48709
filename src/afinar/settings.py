"""Effective settings, from ``AFINAR_*`` environment variables (pydantic-settings).

``AFINAR_HOME`` holds everything afinar writes: the database, the blob store, converted models,
and later adapters, indexes and job folders. It is private (``make_private``): the folder is
0700 and afinar's processes write with umask 077, so every file under it is 0600 and every
folder 0700 (the database holds every group's chunk text).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AFINAR_", extra="ignore")

    home: Path = Field(default=Path("~/.afinar"), description="Where afinar keeps its state.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///$AFINAR_HOME/afinar.db"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Torch device.")
    threads: int | None = Field(
        default=None, ge=1, description="CPU threads for torch; default: all cores."
    )
    default_model: str = Field(
        default="smollm2-135m-instruct", description="Chat model used when none is named."
    )
    default_embedding_model: str = Field(
        default="all-minilm-l6-v2", description="Embedding model used when none is named."
    )
    engine: str = Field(
        default="transformers", min_length=1,
        description="Inference engine: a name of the engine registry (`afinar plugins`; built "
        "in: transformers, llama.cpp with the llama extra; plugins add more).",
    )
    max_adapters: int = Field(
        default=8, ge=1, description="LoRA/DoRA adapters kept loaded on each shared base model."
    )
    max_batch: int = Field(
        default=8, ge=1, le=64,
        description="Concurrent requests on one model decoded together in one batch "
        "(continuous batching); 1: one request at a time.",
    )
    llama_weights: Literal["q8_0", "f16", "f32", "q6_k", "q5_k_m", "q4_k_m", "q4_0"] = Field(
        default="q8_0",
        description="GGUF weight type of the llama.cpp engine (f32: the reference's exact "
        "weights; the k-quants and q4_0 are quantised from an f32 GGUF by llama.cpp's "
        "quantizer).",
    )
    llama_threads: int = Field(
        default=1, ge=1,
        description="CPU threads per llama.cpp model (its barriers spin: more threads than free "
        "cores collapse its speed on a loaded machine).",
    )
    llama_adapters: Literal["merged", "runtime"] = Field(
        default="merged",
        description="llama.cpp engine: serve a LoRA fine-tune as a merged GGUF model of its own "
        "(fast) or as a runtime LoRA on the shared base context (less memory).",
    )
    reranker: str | None = Field(
        default=None,
        description="Reranker for API searches that ask for OpenAI's auto/default ranker (llm, "
        "llm:MODEL, cross-encoder:PATH, overlap); unset: no reranking.",
    )
    job_lease_s: float = Field(
        default=60.0, gt=0,
        description="A running fine-tuning job whose worker has not written a heartbeat for this "
        "long is taken as lost: queued again for the next worker (which resumes from the last "
        "checkpoint), or failed after job_max_attempts lost workers.",
    )
    job_heartbeat_s: float = Field(
        default=10.0, gt=0, description="How often a worker writes its job's heartbeat (at most "
        "a third of job_lease_s).",
    )
    job_max_attempts: int = Field(
        default=3, ge=1, description="Workers a job may lose before it fails.",
    )
    log_requests: bool = Field(
        default=False, description="Keep served chat completions, completions and responses "
        "(prompt and answers, PII-redacted) under their id, for feedback (afinar feedback).",
    )
    log_retention_days: float = Field(
        default=30.0, gt=0, description="Logged requests and their feedback are deleted after "
        "this many days.",
    )

    loss_chunk_tokens: int = Field(
        default=256, ge=0,
        description="Training: trained positions projected onto the vocabulary at a time by "
        "the chunked loss (the full-vocabulary logits never exist for more); 0: all at once.",
    )
    embed_backend: Literal["torch", "int8", "bf16"] = Field(
        default="torch",
        description="Embedding backend of new knowledge bases: torch (float32), int8 (torch's "
        "dynamic int8 quantisation of the model's Linear layers) or bf16 (bfloat16 weights: "
        "fast on CPUs with AMX or AVX512-BF16 and on GPUs); a base keeps its own.",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'afinar.db'}"

    @property
    def blobs_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def effective_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    def effective_device(self) -> str:
        """Resolve ``auto`` to ``cuda`` when a GPU is visible, else ``cpu``."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def describe(self) -> dict[str, str]:
        """The effective values, as shown by ``afinar config show``."""
        return {
            "home": str(self.home),
            "database_url": self.db_url,
            "device": f"{self.device} -> {self.effective_device()}",
            "threads": str(self.effective_threads),
            "default_model": self.default_model,
            "default_embedding_model": self.default_embedding_model,
            "engine": self.engine,
            "max_adapters": str(self.max_adapters),
            "max_batch": str(self.max_batch),
            "llama_weights": self.llama_weights,
            "llama_adapters": self.llama_adapters,
            "llama_threads": str(self.llama_threads),
            "loss_chunk_tokens": str(self.loss_chunk_tokens),
            "embed_backend": self.embed_backend,
            "log_requests": f"{'on' if self.log_requests else 'off'} (retention "
                            f"{self.log_retention_days:g} days)",
        }


PRIVATE_UMASK = 0o077


def make_private(home: Path) -> None:
    """Create ``home`` as 0700 (and make it 0700 if it exists) and add 077 to the process's
    umask: what afinar writes from now on is readable by its user only."""
    old = os.umask(PRIVATE_UMASK)
    os.umask(old | PRIVATE_UMASK)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        home.chmod(0o700)
    except OSError:  # not ours to change (a shared folder): its files are still 0600
        pass


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings()
    make_private(settings.home)
    return settings


def reset_settings() -> None:
    """Forget cached settings (tests change the environment)."""
    get_settings.cache_clear()
