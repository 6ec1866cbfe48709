"""One conversion of the embedded GGUF for all integration tests.

Loading the embedded SmolLM2 in a fresh ``AFINAR_HOME`` first converts its GGUF to a safetensors
folder (about 30 s on 2 cores; ``models/gguf-cache/<key>``). Every integration test starts from
a fresh home, so each one paid that again. Here the conversion runs once per session and each
home gets a link to it, which is what a second load in the same home finds. The conversion
itself, and its cache being reused, are tested in ``test_embedded_models.py``, which converts in
its own home without this link.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import home_at, link_conversion

EMBEDDED = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def embedded_conversion(tmp_path_factory) -> Path:
    """The embedded model's converted folder, made once for the session."""
    from afinar.models import Catalog
    from afinar.models.loader import hf_folder

    with home_at(tmp_path_factory.mktemp("embedded-conversion") / "home"):
        folder, _ = hf_folder(Catalog().get(EMBEDDED))
    return folder


@pytest.fixture
def home(home, embedded_conversion):
    link_conversion(home, embedded_conversion)
    return home
