"""A base model opened for training: its Hugging Face folder (a GGUF converted once, as for
inference), its tokenizer, and its weights loaded on the training device in the training dtype.

Training reads the base through here, not through ``loader.load_causal_lm``: a job needs the
tokenizer first (to validate its files before any weights load), the folder (PEFT's prompt
tuning initialises from it) and weights that are its own (it changes them; a method may load them
quantised), never a cached or shared copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afinar.models.catalog import ModelInfo
from afinar.models.loader import Progress, dtype_for, hf_folder, quiet_transformers, torch_setup
from afinar.settings import Settings


@dataclass
class TrainingBase:
    info: ModelInfo
    folder: Path  # the HF folder holding its weights
    tokenizer: Any
    device: str

    def load_model(self, **load_kwargs: Any):
        """The base's weights, on the device in its training dtype; ``load_kwargs`` are a
        method's extra ``from_pretrained`` arguments (a quantisation config places the weights
        itself, so they are not moved)."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(self.folder),
                                                     dtype=dtype_for(self.device), **load_kwargs)
        if not load_kwargs:
            model.to(self.device)
        return model


def open_training_base(info: ModelInfo, settings: Settings,
                       check_device: Callable[[str], None] | None = None,
                       progress: Progress | None = None) -> TrainingBase:
    """The folder and tokenizer of ``info`` (no weights yet), with torch set up for training.
    ``check_device`` sees the device first, before a GGUF is converted (a method that cannot
    run there fails at once)."""
    from transformers import AutoTokenizer

    device = torch_setup(settings)
    if check_device:
        check_device(device)
    folder, _ = hf_folder(info, settings, progress)
    quiet_transformers()
    return TrainingBase(info, folder, AutoTokenizer.from_pretrained(str(folder)), device)
