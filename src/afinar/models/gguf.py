"""Hugging Face folders to GGUF with llama.cpp's own ``convert_hf_to_gguf.py`` (and LoRA adapters
with ``convert_lora_to_gguf.py``), shared by the llama.cpp engine and ``afinar models export``;
k-quants (``q4_k_m``...) are made from the f32 GGUF by llama.cpp's quantizer (``quantize_gguf``).

The conversion scripts come from the llama-cpp-python sdist (``make`` extracts them into
``.venv/share/afinar-llama.cpp``; ``AFINAR_LLAMA_CONVERT`` names another folder). An unrecognised
BPE pre-tokenizer is written as ``default`` rather than refused: afinar tokenizes with the model's
Hugging Face tokenizer and hands llama.cpp token ids.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

from afinar.errors import AfinarError


class EngineUnavailable(AfinarError):
    code = "engine_unavailable"
    http_status = 500


_CONVERT = r"""
import runpy, sys
d = sys.argv[1]
sys.path[:0] = [d, d + "/gguf-py"]
import conversion.base as b
_pre = b.TextModel.get_vocab_base_pre
def pre(self, tok):  # afinar never uses llama.cpp's tokenizer: token ids are passed in
    try:
        return _pre(self, tok)
    except NotImplementedError:
        return "default"
b.TextModel.get_vocab_base_pre = pre
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def convert_dir() -> Path:
    d = Path(os.environ.get("AFINAR_LLAMA_CONVERT") or Path(sys.prefix) / "share"
             / "afinar-llama.cpp")
    if not (d / "convert_hf_to_gguf.py").is_file():
        raise EngineUnavailable(
            f"llama.cpp's conversion scripts are not in {d}: run `make` (it extracts them from "
            "the llama-cpp-python sdist) or set AFINAR_LLAMA_CONVERT to a llama.cpp checkout")
    return d


def run_convert(script: str, args: list[str], what: str) -> None:
    d = convert_dir()
    r = subprocess.run([sys.executable, "-c", _CONVERT, str(d), str(d / script), *args],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-5:])
        raise EngineUnavailable(f"converting {what} to GGUF failed: {tail}")


def convert_hf(folder: Path, outfile: Path, outtype: str, what: str | None = None) -> Path:
    """``folder`` (a Hugging Face model folder) as one GGUF file in ``outtype``
    (f32, f16, q8_0...)."""
    run_convert("convert_hf_to_gguf.py", [str(folder), "--outfile", str(outfile),
                "--outtype", outtype], what or str(folder))
    return outfile


def quantize_gguf(infile: Path, outfile: Path, ftype: str, threads: int = 1) -> Path:
    """``infile`` (an f32/f16 GGUF) quantised to ``ftype`` (a llama.cpp file type such as
    ``Q4_K_M``) with llama.cpp's own quantizer, as its ``llama-quantize`` tool does. Tensors whose
    rows do not fit the type's blocks get llama.cpp's fallback type (its usual behaviour)."""
    try:
        import llama_cpp
    except ImportError as e:
        raise EngineUnavailable("quantising a GGUF needs llama-cpp-python: pip install "
                                f"'afinar[llama]' ({e})") from e
    code = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype.upper()}", None)
    if code is None:
        raise EngineUnavailable(f"this llama.cpp has no {ftype} quantisation")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = code, threads
    with _quiet_llama(llama_cpp):
        rc = llama_cpp.llama_model_quantize(str(infile).encode(), str(outfile).encode(),
                                            ctypes.byref(params))
    if rc != 0 or not outfile.is_file():
        raise EngineUnavailable(f"llama.cpp could not quantise {infile.name} to {ftype} "
                                f"(llama_model_quantize rc={rc})")
    return outfile


# GGUF weight types llama.cpp's converter writes itself; the others (q6_k, q5_k_m, q4_k_m, q4_0)
# are quantised from an f32 GGUF by its quantizer
CONVERTED = ("f32", "f16", "q8_0")


def write_gguf_as(folder: Path, outfile: Path, outtype: str, f32: Path, threads: int = 1,
                  what: str | None = None) -> Path:
    """``folder`` (an HF model folder) as one GGUF in ``outtype``: converted directly
    (``CONVERTED``), or by way of an f32 GGUF at ``f32`` (reused when it is there) quantised by
    llama.cpp's quantizer. The one recipe of the llama.cpp engine and of ``models export``."""
    if outtype in CONVERTED:
        return convert_hf(folder, outfile, outtype, what)
    if not f32.is_file():
        convert_hf(folder, f32, "f32", what)
    return quantize_gguf(f32, outfile, outtype, threads)


@contextlib.contextmanager
def no_extra_buffers():
    """Models loaded inside get llama.cpp's plain CPU buffers (``use_extra_bufts`` off): the
    CPU backend's extra buffer types (AMX and the repacked q8_0/q4 layouts) crash
    ``llama_decode`` on CPUs with AMX (Sapphire Rapids and later) for q8_0 and q4 weights, the
    135M model and the tiny test model alike. ``llama_cpp.Llama`` builds its model parameters
    from ``llama_model_default_params()`` with no argument for this, so that function is
    wrapped while the model loads (not thread-safe: load one model at a time)."""
    import llama_cpp.llama_cpp as lib

    orig = lib.llama_model_default_params

    def params():
        p = orig()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = orig


def _quiet_llama(llama_cpp):
    """llama.cpp's own progress lines, kept off the terminal (as ``Llama(verbose=False)``)."""
    try:
        from llama_cpp._utils import suppress_stdout_stderr
    except ImportError:  # an older or newer layout: let llama.cpp print
        return contextlib.nullcontext()
    return suppress_stdout_stderr(disable=False)


def merge_lora(adapter: Path, base_folder: Path, dest: Path) -> Path:
    """A LoRA fine-tune merged into its base in fp32 (PEFT ``merge_and_unload``), saved as a
    Hugging Face folder ``dest`` with the base's tokenizer, chat template and generation config."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_folder), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(dest))
    for f in base_folder.iterdir():  # tokenizer, chat template, generation config
        if (f.is_file() and f.suffix not in (".safetensors", ".bin")
                and not (dest / f.name).exists()):
            shutil.copy2(f, dest / f.name)
    del base, merged
    return dest


__all__ = ["CONVERTED", "EngineUnavailable", "convert_dir", "convert_hf", "merge_lora",
           "no_extra_buffers", "quantize_gguf", "run_convert", "write_gguf_as"]
