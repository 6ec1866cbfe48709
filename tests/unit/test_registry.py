"""The one registry shape (afinar.registry): register, list, get, one error naming the entries."""

import pytest

from afinar.errors import InvalidRequest
from afinar.registry import Registry


def test_register_by_attribute_and_by_names_and_list_sorted():
    reg = Registry("widget")

    @reg.register()
    class B:
        name = "bee"

    @reg.register("a", "alpha")
    def a():
        return 1

    assert reg.names() == ["a", "alpha", "bee"]
    assert reg.get("bee") is B and reg.get("alpha") is a
    assert "a" in reg and "zzz" not in reg and len(reg) == 3


def test_unknown_name_is_one_invalid_request_naming_the_known_entries():
    reg = Registry("engine", param="engine")
    reg.add("transformers", object)
    reg.add("llamacpp", int)
    with pytest.raises(InvalidRequest) as e:
        reg.get("transfomers")
    msg = e.value.message
    assert msg == ("unknown engine 'transfomers' (did you mean 'transformers'?); "
                   "known: llamacpp, transformers")
    assert e.value.code == "unknown_engine" and e.value.param == "engine"


def test_a_second_different_entry_for_a_name_is_refused():
    reg = Registry("loader", normalize=str.lower)
    reg.add(".md", int)
    reg.add(".MD", int)  # the same entry again is fine
    with pytest.raises(ValueError, match="already registered"):
        reg.add(".md", str)


def test_entry_points_are_read_once_and_a_broken_plugin_is_only_a_warning(monkeypatch, caplog):
    from afinar import registry as mod

    class EP:
        def __init__(self, name, obj=None, fail=False):
            self.name, self.value, self._obj, self._fail = name, f"pkg:{name}", obj, fail

        def load(self):
            if self._fail:
                raise ImportError("no module named pkg")
            return self._obj

    calls = []

    def entry_points(group):
        calls.append(group)
        return [EP("good", obj=float), EP("bad", fail=True)]

    monkeypatch.setattr(mod.metadata, "entry_points", entry_points)
    reg = Registry("metric", "afinar.test_metrics")
    reg.add("exact", int)
    assert reg.names() == ["exact", "good"]
    assert reg.get("good") is float
    assert calls == ["afinar.test_metrics"]
    assert "bad" in reg.plugin_errors and "afinar plugin bad" in caplog.text
