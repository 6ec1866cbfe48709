import json

import pytest

from afinar.errors import Conflict, InvalidRequest, NotFound
from afinar.models import BUILTINS, Catalog
from afinar.models.inspect import inspect_path


def test_builtins_are_listed(home):
    ids = [m.id for m in Catalog().list()]
    assert ids[:2] == [b.id for b in BUILTINS] == ["smollm2-135m-instruct", "all-minilm-l6-v2"]


def test_add_hf_folder_reads_facts_without_loading(home, tiny_model_dir):
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    m = Catalog().add("tiny", tiny_model_dir)
    assert (m.kind, m.format, m.source) == ("chat", "hf", "registered")
    assert m.context_length == cfg["max_position_embeddings"] == 256
    # parameters from the safetensors headers: embeddings (tied) + 2 layers + final norm
    h, i, v, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], 2 * 8
    layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h
    assert m.parameters == v * h + 2 * layer + h
    assert m.size_bytes > 0
    assert m.info["has_chat_template"] is True
    # persisted: a new catalog over the same database sees it
    assert Catalog().get("tiny").path == tiny_model_dir.resolve()
    assert "tiny" in [x.id for x in Catalog().list(kind="chat")]
    assert "tiny" not in [x.id for x in Catalog().list(kind="embedding")]


def test_add_sentence_transformers_folder_is_an_embedding_model(home, tmp_path):
    folder = tmp_path / "st"
    folder.mkdir()
    (folder / "modules.json").write_text("[]")
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    m = Catalog().add("st", folder)
    assert (m.kind, m.format, m.context_length) == ("embedding", "sentence-transformers", 128)


@pytest.mark.parametrize("name", ["bad name", "ft:base:x", "", "-lead", "a/b", "x" * 200])
def test_bad_ids_are_refused(home, tiny_model_dir, name):
    with pytest.raises(InvalidRequest):
        Catalog().add(name, tiny_model_dir)


def test_duplicates_and_builtin_names_conflict(home, tiny_model_dir):
    Catalog().add("tiny", tiny_model_dir)
    with pytest.raises(Conflict):
        Catalog().add("tiny", tiny_model_dir)
    with pytest.raises(Conflict):
        Catalog().add("smollm2-135m-instruct", tiny_model_dir)


def test_bad_paths_name_the_path(home, tmp_path):
    with pytest.raises(InvalidRequest, match="no such file"):
        Catalog().add("x", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidRequest, match="no config.json"):
        Catalog().add("x", tmp_path / "empty")
    (tmp_path / "w.bin").write_bytes(b"\0" * 10)
    with pytest.raises(InvalidRequest, match=r"w\.bin.*\.gguf"):
        Catalog().add("x", tmp_path / "w.bin")
    (tmp_path / "fake.gguf").write_bytes(b"not a gguf")
    with pytest.raises(InvalidRequest, match="fake.gguf"):
        Catalog().add("x", tmp_path / "fake.gguf")
    assert [m.id for m in Catalog().list() if m.source == "registered"] == []


def test_remove_and_unknown(home, tiny_model_dir):
    Catalog().add("tiny", tiny_model_dir)
    Catalog().remove("tiny")
    with pytest.raises(NotFound, match="afinar models add"):
        Catalog().get("tiny")
    with pytest.raises(NotFound):
        Catalog().remove("tiny")
    with pytest.raises(InvalidRequest):
        Catalog().remove("smollm2-135m-instruct")


def test_inspect_cache_follows_file_changes(tmp_path, tiny_model_dir):
    cache = tmp_path / "cache.json"
    a = inspect_path(tiny_model_dir, cache)
    assert inspect_path(tiny_model_dir, cache) == a
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    cfg["max_position_embeddings"] = 64
    (tiny_model_dir / "config.json").write_text(json.dumps(cfg))
    assert inspect_path(tiny_model_dir, cache).context_length == 64
