"""The private AFINAR_HOME a training benchmark runs in (one helper for the scripts that need it):
the given folder, else a fresh temporary one removed at exit (it holds a converted copy of the
model), with afinar's ``src`` importable and all cores for torch unless told otherwise."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path


def private_home(given: str | None, prefix: str) -> Path:
    home = Path(given or tempfile.mkdtemp(prefix=prefix))
    if not given:
        atexit.register(shutil.rmtree, home, True)
    os.environ["AFINAR_HOME"] = str(home)
    os.environ.setdefault("AFINAR_THREADS", str(os.cpu_count() or 2))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    return home
