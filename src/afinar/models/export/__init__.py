"""``afinar models export``: a catalog model (base or fine-tune) in a format other tools load,
verified before it is called done (``verify``). One module per format, registered in
``EXPORTERS`` (name -> function taking the source model, the output folder, the quantisation and
a scratch folder)."""

from __future__ import annotations

import errno
import tempfile
from collections.abc import Callable
from pathlib import Path

from afinar.errors import InvalidRequest
from afinar.models.export.adapter import export_adapter
from afinar.models.export.gguf_format import QUANTS, export_gguf
from afinar.models.export.merged import export_merged
from afinar.models.export.ollama import export_ollama
from afinar.models.export.source import ExportFailed, Source, read_export_manifest, resolve
from afinar.models.export.verify import Check, verify
from afinar.settings import Settings, get_settings
from afinar.store.atomic import atomic_dir

EXPORTERS: dict[str, Callable[[Source, Path, str, Path], None]] = {
    "gguf": export_gguf, "ollama": export_ollama, "adapter": export_adapter,
    "merged": export_merged,
}


def export_model(model_id: str, fmt: str, out: Path, quant: str = "f32",
                 settings: Settings | None = None) -> tuple[Path, list[Check]]:
    """Export ``model_id`` as ``fmt`` into ``out`` (new or empty) and verify it; on a failed
    check nothing is left in ``out`` and ``ExportFailed`` says why."""
    settings = settings or get_settings()
    if fmt not in EXPORTERS:
        raise InvalidRequest(f"unknown format {fmt!r}; choose one of {', '.join(EXPORTERS)}",
                             param="format")
    if quant not in QUANTS:
        raise InvalidRequest(f"unknown quantisation {quant!r}; choose one of "
                             f"{', '.join(QUANTS)}", param="quant")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidRequest(f"{out} exists and is not an empty folder", param="out")
    if out.exists():
        out.rmdir()
    from afinar.models.loader import quiet_transformers

    quiet_transformers()
    src = resolve(model_id, settings)
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.models_dir) as work, atomic_dir(out) as tmp:
        EXPORTERS[fmt](src, tmp, quant, Path(work))
        hf = src.hf_folder(Path(work)) if fmt != "adapter" else None
        checks = verify(tmp, src, hf)
    return out, checks


def verify_export(path: Path, settings: Settings | None = None) -> list[Check]:
    """Verify an exported folder against the catalog model it was exported from."""
    settings = settings or get_settings()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(path))
    if not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(path))
    data = read_export_manifest(path)
    from afinar.models.loader import quiet_transformers

    quiet_transformers()
    return verify(Path(path), resolve(data["model"], settings))


__all__ = ["EXPORTERS", "Check", "ExportFailed", "export_model", "verify", "verify_export"]
