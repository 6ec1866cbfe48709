"""Embedding backends (torch, int8, bf16) with the embedded MiniLM model, a knowledge base keeping its
own backend for its queries, re-embedding, the message for a backend this afinar lacks, and
ingestion reading the next documents while a batch embeds."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from afinar.errors import InvalidRequest
from afinar.rag import embeddings, ingest
from afinar.rag.embeddings import Embedder, get_embedder
from afinar.rag.kb import KnowledgeBases
from afinar.settings import reset_settings
from afinar.store.tables import KbChunk, KbRecord

TEXTS = [
    "To reset the router's Wi-Fi, hold the reset button for ten seconds.",
    "Invoices are sent on the first day of each month; pay by card or bank transfer.",
    "The outage on 3 May was caused by an expired TLS certificate on the billing gateway.",
    "Debian is a free operating system. Packages are installed with apt.",
    "Red, blue and yellow are primary colours.",
    "short",
]


def test_int8_vectors_are_near_the_torch_ones(home):
    import torch

    ref = get_embedder(backend="torch")
    q = get_embedder(backend="int8")
    assert (ref.backend, q.backend) == ("torch", "int8") and q.model is not ref.model
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    assert any(isinstance(m, Int8Linear) for m in q.model.modules()) and not any(
        type(m) is torch.nn.Linear for m in q.model.modules())  # every Linear quantised
    a, b = ref.encode(TEXTS), q.encode(TEXTS)
    cos = (a * b).sum(1)
    assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    # sentences > 0.99 where activations keep 8 bits (VNNI), a single word > 0.98; fbgemm's
    # 7-bit activations elsewhere lose more (0.95-0.99 on these texts)
    sentences, word = (0.99, 0.98) if embeddings._vnni() else (0.95, 0.94)
    assert cos[:-1].min() > sentences and cos[-1] > word, cos
    assert not np.array_equal(a, b)  # a different computation, not the same model twice
    # the nearest text of each text is the same under both
    assert ((a @ a.T).argsort(1)[:, -2] == (b @ b.T).argsort(1)[:, -2]).all()


def test_bf16_vectors_are_near_the_torch_ones_and_normalised_in_float32(home):
    import torch

    ref, b = get_embedder(backend="torch"), get_embedder(backend="bf16")
    assert b.backend == "bf16" and b.model is not ref.model
    weights = {p.dtype for p in b.model.parameters()}
    assert weights == {torch.bfloat16}, weights  # every weight, not a float32 copy
    x, y = ref.encode(TEXTS), b.encode(TEXTS)
    assert y.dtype == np.float32
    assert np.abs(np.linalg.norm(y, axis=1) - 1).max() < 1e-6  # float32, not bf16 rounding
    cos = (x * y).sum(1)
    assert cos.min() > 0.995, cos
    assert not np.array_equal(x, y)
    assert ((x @ x.T).argsort(1)[:, -2] == (y @ y.T).argsort(1)[:, -2]).all()


def test_batches_go_longest_first_and_every_vector_stays_at_its_text(home, monkeypatch):
    e = get_embedder(backend="torch")
    texts = TEXTS + ["a much longer text about routers, invoices, outages and colours " * 3]
    alone = np.stack([e.encode([t])[0] for t in texts])
    seen: list[list[str]] = []
    real = e.model.encode

    def encode(batch, *a, **k):
        seen.append(list(batch))
        return real(batch, *a, **k)

    monkeypatch.setattr(e.model, "encode", encode)
    together = e.encode(texts, batch_size=3)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert [len(b) for b in seen] == [3, 3, 1]
    lengths = [len(t) for b in seen for t in b]
    assert lengths == sorted(lengths, reverse=True)  # batches pad to lengths near their own


def test_unknown_backend_is_refused_before_anything_is_made(home):
    kbs = KnowledgeBases()
    with pytest.raises(InvalidRequest, match="unknown embedding backend 'onnx'; known: "
                                             "torch, int8, bf16"):
        kbs.create("x", embed_backend="onnx")
    assert [r.name for r in kbs.list()] == []


def encoded_by(monkeypatch) -> list[str]:
    """The backend of every embedder ``encode`` call, in order."""
    seen: list[str] = []
    real = Embedder.encode

    def encode(self, texts, *a, **k):
        seen.append(self.backend)
        return real(self, texts, *a, **k)

    monkeypatch.setattr(Embedder, "encode", encode)
    return seen


def test_a_base_embeds_its_queries_with_its_chunks_backend(home, monkeypatch):
    monkeypatch.setenv("AFINAR_EMBED_BACKEND", "int8")
    reset_settings()
    kbs = KnowledgeBases()
    kbs.create("q8")  # the setting's backend, recorded
    kbs.create("f32", embed_backend="torch")  # an explicit one
    assert kbs.get("q8").info["embed_backend"] == "int8"
    assert kbs.get("f32").info["embed_backend"] == "torch"
    monkeypatch.setenv("AFINAR_EMBED_BACKEND", "torch")  # changed later: bases keep theirs
    reset_settings()
    kbs = KnowledgeBases()
    seen = encoded_by(monkeypatch)
    for name in ("q8", "f32"):
        kbs.add_texts(name, [(f"t{i}", t) for i, t in enumerate(TEXTS)])
    assert seen == ["int8", "torch"]
    seen.clear()
    hits = kbs.search("q8", "how do I reset the wifi", k=1, mode="dense")
    assert seen == ["int8"] and hits[0].source == "t0"
    kbs.search("f32", "how do I reset the wifi", k=1, mode="dense")
    assert seen == ["int8", "torch"]


def test_reembed_switches_every_chunk_and_the_queries(home, monkeypatch):
    kbs = KnowledgeBases()
    rec = kbs.create("b", embed_backend="int8")
    kbs.add_texts("b", [(f"t{i}", t) for i, t in enumerate(TEXTS)])
    version = kbs.get("b").version
    assert kbs.reembed("b", "torch") == len(TEXTS)
    assert kbs.get("b").info["embed_backend"] == "torch" and kbs.get("b").version > version
    from sqlalchemy import select

    with kbs.db.session() as s:
        rows = list(s.execute(select(KbChunk.text, KbChunk.vector).where(
            KbChunk.kb_id == rec.id).order_by(KbChunk.rowid)))
    stored = np.stack([np.frombuffer(v, dtype=np.float32) for _, v in rows])
    np.testing.assert_allclose(stored, get_embedder(backend="torch").encode(
        [t for t, _ in rows]), atol=1e-6)
    seen = encoded_by(monkeypatch)
    assert kbs.search("b", "primary colours", k=1, mode="dense")[0].source == "t4"
    assert seen == ["torch"]
    with pytest.raises(InvalidRequest, match="unknown embedding backend 'fp8'"):
        kbs.reembed("b", "fp8")


def test_a_backend_this_afinar_lacks_is_one_clear_message(home):
    kbs = KnowledgeBases()
    rec = kbs.create("elsewhere")
    kbs.add_text("elsewhere", "a", "Invoices are sent on the first day of each month.")
    with kbs.db.session() as s:  # as a newer afinar with an onnx backend would have left it
        r = s.get(KbRecord, rec.id)
        r.info = {**r.info, "embed_backend": "onnx"}
    with pytest.raises(InvalidRequest) as e:
        kbs.search("elsewhere", "invoices", mode="dense")
    assert e.value.message == (
        "knowledge base 'elsewhere' was embedded with the 'onnx' backend, which this afinar "
        "does not have (known: torch, int8, bf16); its queries must use the same backend as its "
        "chunks: re-embed it with `afinar kb reembed elsewhere --backend torch`")
    with pytest.raises(InvalidRequest, match="embedded with the 'onnx' backend"):
        kbs.add_text("elsewhere", "b", "More text.")  # no chunk of another backend added
    kbs.reembed("elsewhere", "torch")  # the way out
    assert kbs.search("elsewhere", "invoices", mode="dense")[0].source == "a"


def test_cli_create_and_reembed(home, capsys):
    from tests.helpers import run_cli

    code, out, err = run_cli(capsys, "kb", "create", "c", "--embed-backend", "int8")
    assert code == 0 and "(int8)" in out, err
    code, out, err = run_cli(capsys, "kb", "reembed", "c", "--backend", "fp8")
    assert code == 2 and err.strip() == ("error: unknown embedding backend 'fp8'; known: "
                                         "torch, int8, bf16")
    code, out, err = run_cli(capsys, "kb", "reembed", "c", "--backend", "torch")
    assert code == 0 and "re-embedded 0 chunks of c with the torch backend" in out, err


def test_ingestion_reads_the_next_documents_while_a_batch_embeds(home, tmp_path, monkeypatch):
    """The first batch's embedding waits until a later document has been read: only a reader
    running beside the embedding lets it finish (else the wait times out and the test fails)."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, t in enumerate(TEXTS):
        (folder / f"{i}.md").write_text(f"# Doc {i}\n\n{t}\n")
    monkeypatch.setattr(ingest, "EMBED_BATCH", 1)  # one document per batch
    read: list[str] = []
    third_read = threading.Event()
    real_load = ingest.load_document

    def load(path):
        read.append(threading.current_thread().name)
        if len(read) == 3:
            third_read.set()
        return real_load(path)

    monkeypatch.setattr(ingest, "load_document", load)
    overlapped = []
    real_encode = Embedder.encode

    def encode(self, texts, *a, **k):
        if not overlapped:  # the first batch: document 0
            overlapped.append(third_read.wait(timeout=30))
        return real_encode(self, texts, *a, **k)

    monkeypatch.setattr(Embedder, "encode", encode)
    kbs = KnowledgeBases()
    kbs.create("o")
    r = kbs.add("o", [folder])
    assert overlapped == [True]
    assert set(read) == {"afinar-ingest-reader"}
    assert [p.rsplit("/", 1)[-1] for p in r.added] == [f"{i}.md" for i in range(len(TEXTS))]
    assert r.chunks == len(TEXTS) and not r.failed
    assert not [t for t in threading.enumerate() if t.name == "afinar-ingest-reader"]
    again = kbs.add("o", [folder])  # unchanged: checked by the reader, nothing read
    assert len(again.unchanged) == len(TEXTS) and len(read) == len(TEXTS)


def test_reader_errors_reach_the_caller_and_stop_the_reader(home, tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.md").write_text(f"# Doc {i}\n\nText number {i}.\n")
    real_load = ingest.load_document

    def load(path):
        if path.name == "1.md":
            raise InvalidRequest(f"{path}: unreadable")
        if path.name == "2.md":
            raise RuntimeError("loader bug")
        return real_load(path)

    monkeypatch.setattr(ingest, "load_document", load)
    kbs = KnowledgeBases()
    kbs.create("e")
    with pytest.raises(RuntimeError, match="loader bug"):
        kbs.add("e", [folder])
    assert not [t for t in threading.enumerate() if t.name == "afinar-ingest-reader"]
    (folder / "2.md").unlink()
    r = kbs.add("e", [folder])
    assert [s.rsplit("/", 1)[-1] for s, _ in r.failed] == ["1.md"]
    assert sorted(p.rsplit("/", 1)[-1] for p in r.added) == ["0.md", "3.md"]


def test_the_embedder_cache_keys_on_the_backend(home):
    assert get_embedder(backend="int8") is get_embedder(backend="int8")
    assert get_embedder(backend="int8") is not get_embedder(backend="torch")
    assert embeddings.base_backend(type("R", (), {"info": {}})()) == "torch"  # older bases
