"""``afinar models export``: a catalog model (base or fine-tune) in a format other tools load,
verified before it is called done (``verify``). One module per format, each registering its
``Exporter`` in ``EXPORTERS`` (``afinar.registry``'s shape; plugins: the ``afinar.exporters``
entry point group)."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

from afinar.errors import InvalidRequest
from afinar.models.export import adapter, gguf_format, merged, ollama  # noqa: F401 (register)
from afinar.models.export.formats import EXPORTERS, QUANTS, Check, Exporter
from afinar.models.export.source import ExportFailed, read_export_manifest, resolve
from afinar.models.export.verify import verify
from afinar.settings import Settings, get_settings
from afinar.store.atomic import atomic_dir


def check_options(fmt: str, quant: str | None) -> tuple[Exporter, str | None]:
    """The exporter for ``fmt`` and the quantisation it runs with (f32 where it takes one and
    none is given), or one ``InvalidRequest`` naming the known formats or quantisations."""
    exporter = EXPORTERS.get(fmt)()
    if not exporter.uses_quant:
        if quant is not None:
            raise InvalidRequest(f"--quant applies to GGUF weights, not to the {fmt} format "
                                 f"(formats with it: {', '.join(gguf_formats())})",
                                 param="quant")
        return exporter, None
    quant = "f32" if quant is None else quant.lower()
    if quant not in QUANTS:
        raise InvalidRequest(f"unknown quantisation {quant!r}; known: {', '.join(QUANTS)}",
                             code="unknown_quantisation", param="quant")
    return exporter, quant


def gguf_formats() -> list[str]:
    return [name for name, cls in EXPORTERS.items() if cls.uses_quant]


def export_model(model_id: str, fmt: str, out: Path, quant: str | None = None,
                 settings: Settings | None = None) -> tuple[Path, list[Check]]:
    """Export ``model_id`` as ``fmt`` into ``out`` (new or empty) and verify it; on a failed
    check nothing is left in ``out`` and ``ExportFailed`` says why."""
    settings = settings or get_settings()
    exporter, quant = check_options(fmt, quant)
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
        exporter.export(src, tmp, quant, Path(work))
        hf = src.hf_folder(Path(work)) if exporter.needs_hf else None
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


__all__ = ["EXPORTERS", "QUANTS", "Check", "ExportFailed", "Exporter", "check_options",
           "export_model", "gguf_formats", "verify", "verify_export"]
