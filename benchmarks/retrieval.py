"""Retrieval quality and speed on a BEIR-layout folder (default ../shared/datasets/squad).

Prints nDCG@10, recall@10, recall@100 and MRR@10 for BM25 (lexical), dense, hybrid (RRF) and
weighted fusion; query latency p50/p95 (including the query embedding where used); and the
ingestion rate against the raw sentence-transformers encode rate on the same chunk texts,
measured in the same run. ``--scale N`` also measures query latency at N chunks, built from
synthetic texts and random unit vectors written straight to the store (embedding N real chunks
takes hours on this machine; the vectors are noisy copies of the corpus's real chunk
embeddings), with real query embedding; above 20,000 chunks dense search uses
an HNSW graph, and its recall@10 against exact search is printed.

Reranking (``--rerank NAME``, default ``llm``: the configured chat model; ``none``: skip): nDCG@10
and p50 latency per query of hybrid search without and with the reranker (over 3 x 10 hits), and
their ratios, measured in the same run, on the BEIR folder and on the Debian FAQ
(../shared/corpora/debian-faq-html, all chapters; its 112 numbered questions from
debian-faq.txt are the queries, the section that asks each one its relevant item). This is what
``afinar kb tune-fusion`` decides per base. ``--limit N`` takes the first N queries of each.

Embedding backends (``--backends torch,int8,bf16``; ``none``: skip): per backend, one base built from
the same passages with that backend (``kb create --embed-backend``): ingestion chunks/s (reading,
chunking, embedding, writing), the raw encode rate of its embedder on the same chunk texts, and
nDCG@10 of dense and hybrid search (queries embedded with the base's backend), each against the
torch backend of the same run (issue 20: a backend with >= 2x chunks/s and at most 1 point of
nDCG@10 lost). bf16 is fast only where the CPU has AMX or AVX512-BF16; the flags are printed.
``--passages N`` takes the first N passages (a smoke run: ``--passages 40 --limit 5 --rerank
none --no-faq``).

    .venv/bin/python benchmarks/retrieval.py [--beir ../shared/datasets/squad] [--scale 100000]
        [--rerank llm|cross-encoder:PATH|none] [--limit N] [--no-faq] [--backends torch,int8,bf16]
        [--passages N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared/datasets/squad"


def read_beir(folder: Path):
    corpus = [json.loads(x) for x in (folder / "corpus.jsonl").read_text().splitlines()]
    queries = {q["_id"]: q["text"] for q in map(json.loads,
                                                 (folder / "queries.jsonl").read_text().splitlines())}
    qrels: dict[str, dict[str, float]] = {}
    for line in (folder / "qrels.tsv").read_text().splitlines()[1:]:
        q, c, score = line.split("\t")
        if float(score) > 0:
            qrels.setdefault(q, {})[c] = float(score)
    return corpus, {q: t for q, t in queries.items() if q in qrels}, qrels


def metrics(ranked: list[str], rel: dict[str, float]) -> dict[str, float]:
    dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sum(r / math.log2(i + 2) for i, r in enumerate(sorted(rel.values(), reverse=True)[:10]))
    mrr = next((1 / (i + 1) for i, d in enumerate(ranked[:10]) if d in rel), 0.0)
    return {"ndcg@10": dcg / ideal if ideal else 0.0,
            "recall@10": len(set(ranked[:10]) & set(rel)) / len(rel),
            "recall@100": len(set(ranked[:100]) & set(rel)) / len(rel), "mrr@10": mrr}


def docs_of(hits) -> list[str]:
    seen, out = set(), []
    for h in hits:
        if h.source not in seen:
            seen.add(h.source)
            out.append(h.source)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beir", type=Path, default=DEFAULT)
    ap.add_argument("--scale", type=int, default=0)
    ap.add_argument("--max-queries", "--limit", type=int, default=0, dest="max_queries")
    ap.add_argument("--rerank", default="llm", help="Reranker to compare with (none: skip).")
    ap.add_argument("--no-faq", action="store_true", help="Skip the Debian FAQ comparison.")
    ap.add_argument("--backends", default="torch,int8,bf16",
                    help="Embedding backends to compare against torch (none: skip).")
    ap.add_argument("--passages", type=int, default=0, help="Only the first N passages.")
    a = ap.parse_args()
    if not (a.beir / "corpus.jsonl").exists():
        print(f"no BEIR folder at {a.beir}")
        return 1
    with tempfile.TemporaryDirectory() as home:
        os.environ["AFINAR_HOME"] = home
        from afinar.rag.embeddings import get_embedder
        from afinar.rag.kb import KnowledgeBases

        corpus, queries, qrels = read_beir(a.beir)
        if a.passages:
            corpus = corpus[: a.passages]
            kept = {c["_id"] for c in corpus}
            qrels = {q: r for q, r in qrels.items() if set(r) & kept}
            queries = {q: t for q, t in queries.items() if q in qrels}
        if a.max_queries:
            queries = dict(list(queries.items())[: a.max_queries])
        kbs = KnowledgeBases()
        kbs.create("bench")
        texts = [(c["_id"], (c.get("title", "") + "\n\n" + c["text"]).strip()) for c in corpus]
        emb = get_embedder()
        emb.encode(["warm up"])
        r = kbs.add_texts("bench", texts)
        ingest_rate = r.chunks / r.seconds
        from sqlalchemy import select

        from afinar.store.tables import KbChunk

        with kbs.db.session() as s:
            chunk_texts = list(s.scalars(select(KbChunk.text)))
        t = time.perf_counter()
        emb.encode(chunk_texts)
        raw_rate = len(chunk_texts) / (time.perf_counter() - t)
        print(f"{a.beir.name}: {len(corpus)} passages -> {r.chunks} chunks, {len(queries)} "
              f"queries")
        print(f"ingestion {ingest_rate:.1f} chunks/s; raw sentence-transformers encode "
              f"{raw_rate:.1f} chunks/s; ratio {ingest_rate / raw_rate:.2f} (target >= 0.90)")
        print(f"{'mode':10} {'nDCG@10':>8} {'R@10':>6} {'R@100':>6} {'MRR@10':>7} "
              f"{'p50 ms':>7} {'p95 ms':>7}")
        for mode in ("lexical", "dense", "hybrid", "weighted"):
            scores, lat = [], []
            for qid, q in queries.items():
                t = time.perf_counter()
                hits = kbs.search("bench", q, k=100, mode=mode, groups=None)
                lat.append((time.perf_counter() - t) * 1000)
                scores.append(metrics(docs_of(hits), qrels[qid]))
            m = {k: statistics.mean(s[k] for s in scores) for k in scores[0]}
            lat.sort()
            print(f"{mode:10} {m['ndcg@10']:8.3f} {m['recall@10']:6.3f} {m['recall@100']:6.3f} "
                  f"{m['mrr@10']:7.3f} {lat[len(lat) // 2]:7.1f} {lat[int(len(lat) * .95)]:7.1f}")
        if a.backends != "none":
            backends = ["torch"] + [b for b in a.backends.split(",") if b and b != "torch"]
            backend_table(kbs, texts, queries, qrels, backends)
        if a.rerank != "none":
            from afinar.rag.rerank import get_reranker

            reranker = get_reranker(a.rerank)
            print(f"\nreranking ({a.rerank}) on hybrid search, nDCG@10 and p50 ms per query")
            print(f"{'corpus':10} {'queries':>7} {'nDCG':>6} {'+rerank':>7} {'ratio':>6} "
                  f"{'p50 ms':>7} {'+rerank':>8} {'ratio':>6}")
            labelled = [(q, set(qrels[qid])) for qid, q in queries.items()]
            print(rerank_row(kbs, "bench", a.beir.name, labelled, lambda h: h.source, reranker))
            if not a.no_faq and FAQ_HTML.is_dir():
                kbs.create("faq")
                kbs.add("faq", sorted(FAQ_HTML.glob("*.html")))
                faq = faq_labelled()[: a.max_queries or None]
                print(rerank_row(kbs, "faq", "debian-faq", faq, section, reranker))
        if a.scale:
            scale(kbs, a.scale, list(queries.values()))
    return 0


def backend_table(kbs, texts, queries, qrels, backends: list[str]) -> None:
    """Per embedding backend: a base of the same passages, its ingestion and raw encode rates
    and its nDCG@10 (dense, hybrid), with ratios and differences against torch."""
    from sqlalchemy import select

    from afinar.rag.embeddings import SPEED_FLAGS, cpu_flags, get_embedder
    from afinar.store.tables import KbChunk

    rows = {}
    for b in backends:
        name = f"bench-{b}"
        rec = kbs.create(name, embed_backend=b)
        emb = get_embedder(rec.embedding_model, kbs.settings, b)
        emb.encode(["warm up"])  # loading (and quantising) is not ingestion
        r = kbs.add_texts(name, texts)
        with kbs.db.session() as s:
            chunk_texts = list(s.scalars(select(KbChunk.text).where(KbChunk.kb_id == rec.id)))
        t = time.perf_counter()
        emb.encode(chunk_texts)
        raw = len(chunk_texts) / (time.perf_counter() - t)
        nd = {}
        for mode in ("dense", "hybrid"):
            nd[mode] = statistics.mean(metrics(docs_of(kbs.search(
                name, q, k=10, mode=mode, groups=None)), qrels[qid])["ndcg@10"]
                for qid, q in queries.items())
        rows[b] = {"rate": r.chunks / r.seconds, "raw": raw, **nd}
    ref = rows["torch"]
    print(f"\nembedding backends ({len(texts)} passages, {len(queries)} queries; ratios and "
          "nDCG differences against torch)")
    print(f"{'backend':8} {'chunks/s':>8} {'ratio':>6} {'encode/s':>8} {'ratio':>6} "
          f"{'dense':>6} {'diff':>6} {'hybrid':>6} {'diff':>6}")
    for b, r in rows.items():
        print(f"{b:8} {r['rate']:8.1f} {r['rate'] / ref['rate']:5.2f}x {r['raw']:8.1f} "
              f"{r['raw'] / ref['raw']:5.2f}x {r['dense']:6.3f} "
              f"{100 * (r['dense'] - ref['dense']):+6.1f} {r['hybrid']:6.3f} "
              f"{100 * (r['hybrid'] - ref['hybrid']):+6.1f}")
    print("(diff: nDCG@10 points; target: chunks/s >= 2x, dense diff >= -1.0)")
    have = [f for f in SPEED_FLAGS if f in cpu_flags()]
    print(f"CPU: {', '.join(have) or 'none of ' + ', '.join(SPEED_FLAGS)}")

FAQ_HTML = DEFAULT.parents[1] / "corpora/debian-faq-html"
FAQ_TXT = DEFAULT.parents[1] / "corpora/debian-faq.txt"


def faq_labelled() -> list[tuple[str, set[str]]]:
    """The FAQ's numbered questions (its table of contents) with the section that asks each
    one ("1.2") as the relevant item."""
    import re

    out, seen = [], set()
    for line in FAQ_TXT.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"^ +(\d+\.\d+)\. (.+?)\s*$", line)
        if m and m.group(1) not in seen:
            seen.add(m.group(1))
            out.append((m.group(2), {m.group(1)}))
    return out


def section(hit) -> str:
    """The FAQ section of a hit: "1.2" of the heading "1.2 What is Debian GNU/Linux?"."""
    for h in reversed(hit.heading_path or []):
        head = h.split()[0].rstrip(".") if h.split() else ""
        if head.replace(".", "").isdigit() and "." in head:
            return head
    return hit.source


def rerank_row(kbs, kb: str, name: str, labelled, item, reranker) -> str:
    """One table row: nDCG@10 and p50 latency per query without and with ``reranker``."""
    from afinar.evals.ranking import ndcg_at_k

    out = {}
    for label, rr in (("none", None), ("rerank", reranker)):
        nd, lat = [], []
        for q, rel in labelled:
            t = time.perf_counter()
            hits = kbs.search(kb, q, k=10, mode="hybrid", groups=None, reranker=rr)
            lat.append((time.perf_counter() - t) * 1000)
            nd.append(ndcg_at_k((item(h) for h in hits), rel, 10))
        lat.sort()
        out[label] = (statistics.mean(nd), lat[len(lat) // 2])
    (n0, l0), (n1, l1) = out["none"], out["rerank"]
    return (f"{name:10} {len(labelled):7d} {n0:6.3f} {n1:7.3f} {n1 / n0 if n0 else 0:6.2f} "
            f"{l0:7.1f} {l1:8.1f} {l1 / l0 if l0 else 0:6.1f}")


def scale(kbs, n: int, queries: list[str]) -> None:
    """Query latency at ``n`` chunks: synthetic texts and vectors, real query embedding.

    The vectors are noisy copies of the benchmark corpus's real chunk embeddings (so they have
    the neighbourhood structure of real text; uniformly random vectors in 384 dimensions are all
    about equally far from any query, which makes recall meaningless)."""
    import numpy as np
    from sqlalchemy import select

    from afinar.ids import new_id
    from afinar.store.tables import KbChunk, KbDocument

    with kbs.db.session() as s:
        real = np.stack([np.frombuffer(v, dtype=np.float32) for v in s.scalars(
            select(KbChunk.vector).where(KbChunk.kb_id == kbs.get("bench").id))])
    kbs.create("scale")
    rec = kbs.get("scale")
    rnd = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(20000)]
    per_doc = 50
    t = time.perf_counter()
    with kbs.db.session() as s:
        for d in range(0, n, per_doc):
            doc_id = new_id("file-")
            s.add(KbDocument(id=doc_id, kb_id=rec.id, source=f"synthetic/{d}", sha256="0" * 64,
                             groups=[], attributes={}, status="ready", n_chunks=per_doc,
                             created_at=0, updated_at=0))
            centres = real[rnd.integers(0, len(real), per_doc)]
            noise = rnd.standard_normal((per_doc, rec.dimensions)).astype(np.float32)
            vecs = centres + noise * np.float32(0.6 / np.sqrt(rec.dimensions))
            vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
            s.add_all(KbChunk(kb_id=rec.id, doc_id=doc_id, idx=i, text=" ".join(
                random.Random(d + i).choices(vocab, k=120)), heading_path=[], pages=[], start=0,
                end=0, n_tokens=120, vector=v.tobytes(), norm=1.0) for i, v in enumerate(vecs))
        kbs._bump(s, rec.id)
    _, idx = kbs.index("scale")
    print(f"scale: {n} synthetic chunks written and indexed in {time.perf_counter() - t:.0f} s "
          f"({'HNSW' if idx.ann is not None else 'exact'} dense search)")
    if idx.ann is not None:
        from afinar.rag.embeddings import get_embedder

        qv = get_embedder().encode(queries[:200])
        everyone = np.ones(idx.size, dtype=bool)
        hit = sum(len(set(idx.dense(q, everyone, 10)[0].tolist()) & set(
            np.argsort(-(idx.vectors @ q))[:10].tolist())) for q in qv)
        print(f"scale HNSW recall@10 against exact search: {hit / (10 * len(qv)):.3f}")
    for mode in ("dense", "hybrid"):
        lat = []
        for q in queries[:200]:
            t = time.perf_counter()
            kbs.search("scale", q, k=10, mode=mode, groups=[])
            lat.append((time.perf_counter() - t) * 1000)
        lat.sort()
        print(f"scale {mode:7} p50 {lat[len(lat) // 2]:.1f} ms, p95 {lat[int(len(lat) * .95)]:.1f} "
              "ms (target p50 < 30 ms)")


if __name__ == "__main__":
    sys.exit(main())
