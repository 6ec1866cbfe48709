"""afinar: adapt open LLMs to a domain (fine-tuning, RAG, evaluation) behind an OpenAI-shaped API.

The public Python API is the service layer: ``afinar.models``, ``afinar.store`` and (as they land)
``afinar.data``, ``afinar.tuning``, ``afinar.rag``, ``afinar.evals``. The CLI and the HTTP server are
thin adapters over them.
"""

import os as _os

# Weights come from local files only: never let transformers or huggingface_hub reach for a hub.
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import warnings as _warnings  # noqa: E402

# peft calls a transformers API that warns about its own rename; nothing for users to act on.
_warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

__version__ = "0.1.0"
