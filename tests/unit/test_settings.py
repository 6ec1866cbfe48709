from pathlib import Path

import pytest
from pydantic import ValidationError

from afinar.settings import Settings


def test_defaults(monkeypatch):
    for k in ("AFINAR_HOME", "AFINAR_DATABASE_URL", "AFINAR_DEVICE", "AFINAR_THREADS"):
        monkeypatch.delenv(k, raising=False)
    s = Settings()
    assert s.home == (Path.home() / ".afinar").resolve()
    assert s.db_url == f"sqlite:///{s.home / 'afinar.db'}"
    assert s.device == "auto"
    assert s.effective_device() in ("cpu", "cuda")
    assert s.effective_threads >= 1


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("AFINAR_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("AFINAR_DATABASE_URL", "sqlite:///" + str(tmp_path / "other.db"))
    monkeypatch.setenv("AFINAR_DEVICE", "cpu")
    monkeypatch.setenv("AFINAR_THREADS", "1")
    s = Settings()
    assert s.home == tmp_path / "h"
    assert s.db_url.endswith("other.db")
    assert s.effective_device() == "cpu"
    assert s.effective_threads == 1
    assert s.describe()["device"] == "cpu -> cpu"


@pytest.mark.parametrize("var,value", [("AFINAR_DEVICE", "gpu"), ("AFINAR_THREADS", "0")])
def test_bad_values_are_refused(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError):
        Settings()


def test_engine_is_any_registered_name_and_an_unknown_one_is_the_registry_error(monkeypatch,
                                                                              tmp_path):
    """The setting takes plugin engines too, so it is checked against the registry where it is
    used, with the registry's one message."""
    from afinar.errors import InvalidRequest
    from afinar.models.engines import ENGINES, get_engine

    monkeypatch.setenv("AFINAR_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("AFINAR_ENGINE", "transfomers")
    assert Settings().engine == "transfomers"
    assert "transformers" in ENGINES.names()
    with pytest.raises(InvalidRequest, match=r"unknown engine 'transfomers' \(did you mean "
                                             r"'transformers'\?\); known: "):
        get_engine(Settings().engine)
