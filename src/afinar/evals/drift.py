"""The drift monitor (``afinar monitor MODEL_OR_ALIAS``): are the questions people ask now still
those the model was trained and evaluated on, and is the knowledge base still answering them?

Current questions come from the request log (``AFINAR_LOG_REQUESTS=on``: the requests to the
model, or to any model an alias has stood for, since ``--since``) or from a file (``--queries``).
The report holds four signals, each with its numbers, and the recommendations the thresholds
(``drift_inputs.DriftConfig``) draw from them:

1. Distance to the training data and to the evaluation set. Every question is embedded (the
   embedded all-MiniLM-L6-v2 by default, through ``afinar.rag.embeddings``: the vectors the
   knowledge bases use) and its cosine distance to the nearest reference question measured; the
   reference's own distribution is each reference question's distance to its nearest *other*
   one (leave-one-out). The test is a permutation test (``scipy.stats.permutation_test``, one
   sided) of the difference of the two means: queries and reference are pooled and re-split at
   random, and each split recomputes both nearest-neighbour distributions. Why this test and not
   ``ks_2samp`` on the two distance lists: the leave-one-out distances are not independent of
   each other (a mutual nearest pair gives the same distance twice; templated training data is
   full of such pairs), which breaks the independence the KS p-value assumes, while re-splitting
   the pooled questions is exact under the null hypothesis of one distribution (exchangeability).
   Why nearest-neighbour distances and not an MMD or energy test on the embeddings: those also
   flag a change of *mix* inside what the model knows (all questions about one product), which
   needs no re-training; the nearest-neighbour distance grows only when questions leave the
   covered region, which is what "far from the training data" means. A comparison is flagged
   when p < ``alpha`` and the mean distance grew by at least ``min_effect``; ``outside_share`` is
   the share of questions farther than the reference's own 95th percentile (about 5% when
   nothing drifted).
2. "Not in the sources": the share of grounded answers that abstained (afinar's ``NOTHING_FOUND``,
   the RAFT-trained ``NOT_IN_SOURCES``, and ``abstain_phrases``) in the log; for a query file,
   with a knowledge base, the share of questions grounded retrieval abstains on
   (``rag.answer.sources_for``: retrieval only, no model runs).
3. Retrieval scores: the top-1 dense cosine of each current question in the knowledge base now,
   against a baseline (the log's earlier requests, else the evaluation questions, else the
   training questions), by a one-sided Mann-Whitney U test (independent samples of scores).
4. Negative feedback: the share of -1 ratings on the window's logged requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from afinar.data.minhash import near_duplicates
from afinar.errors import InvalidRequest, NotFound
from afinar.evals import drift_inputs as inp
from afinar.evals.improve import served_names
from afinar.models.aliases import Aliases
from afinar.models.catalog import Catalog
from afinar.rag.answer import NOTHING_FOUND, sources_for
from afinar.rag.calibration import best_dense
from afinar.rag.embeddings import get_embedder
from afinar.rag.kb import KnowledgeBases
from afinar.rag.synth import NOT_IN_SOURCES
from afinar.settings import Settings, get_settings
from afinar.store.db import get_database
from afinar.store.schedules import Schedules

ABSTENTIONS = (NOTHING_FOUND, NOT_IN_SOURCES)
RESYNC, EXTEND_EVAL, RETRAIN = ("re-sync the knowledge base", "extend the evaluation set",
                                "re-train")


def _sample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[np.sort(rng.choice(len(x), n, replace=False))]


def near_groups(texts: list[str], threshold: float) -> np.ndarray:
    """A group label per text: near duplicates (``data.minhash``, Jaccard of word shingles
    >= ``threshold``) share one, joined transitively."""
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for j, i, _ in near_duplicates(texts, threshold):
        parent[root(j)] = root(i)
    return np.array([root(i) for i in range(len(texts))])


def distance_test(queries: np.ndarray, reference: np.ndarray, *, permutations: int = 999,
                  seed: int = 0, max_reference: int = 500, max_queries: int = 500,
                  alpha: float = 0.01, min_effect: float = 0.05,
                  groups: np.ndarray | None = None) -> dict[str, Any]:
    """The nearest-neighbour permutation test of the module's point 1 on unit vectors.
    ``groups``: a label per row of queries then reference (``near_groups``); rows of one group
    are never each other's neighbour (default: each row its own group)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(len(queries) + len(reference)) if groups is None else np.asarray(groups)
    qi = _sample(np.arange(len(queries)), max_queries, rng)
    ri = _sample(np.arange(len(reference)), max_reference, rng)
    q = np.asarray(queries, np.float32)[qi]
    r = np.asarray(reference, np.float32)[ri]
    g = np.concatenate([labels[qi], labels[len(queries) + ri]])
    m, n = len(q), len(r)
    pool = np.concatenate([q, r])
    dist = (1.0 - pool @ pool.T).astype(np.float32)
    dist[g[:, None] == g[None, :]] = np.inf  # itself and its near duplicates: never neighbours

    def statistic(x, y, axis=-1):
        x, y = x.astype(np.intp), y.astype(np.intp)
        near_q = dist[x[..., :, None], y[..., None, :]].min(axis=-1).mean(axis=-1)
        near_r = dist[y[..., :, None], y[..., None, :]].min(axis=-1).mean(axis=-1)
        return near_q - near_r

    res = stats.permutation_test((np.arange(m), np.arange(m, m + n)), statistic,
                                 permutation_type="independent", vectorized=True,
                                 n_resamples=permutations, alternative="greater",
                                 batch=max(1, int(4e6 // (n * (n + m)))), random_state=rng)
    dq = dist[:m, m:].min(axis=1)
    dr = dist[m:, m:].min(axis=1)
    finite = np.isfinite(dq).all() and np.isfinite(dr).all()
    if not finite:  # every reference row in one group: nothing to measure against
        raise InvalidRequest("every reference question is a near duplicate of every other: "
                             "raise near_duplicate in the config", param="near_duplicate")
    p95 = float(np.quantile(dr, 0.95))
    effect = float(dq.mean() - dr.mean())
    return {"n_queries": m, "n_reference": n, "query_mean": float(dq.mean()),
            "reference_mean": float(dr.mean()), "effect": effect,
            "p_value": float(res.pvalue), "reference_p95": p95,
            "outside_share": float((dq > p95).mean()),
            "drifted": bool(res.pvalue < alpha and effect >= min_effect),
            "query_distances": dq.round(4).tolist(), "reference_distances": dr.round(4).tolist(),
            "test": f"permutation test of mean nearest-neighbour cosine distance "
                    f"({permutations} resamples, one-sided)"}


def retrieval_test(recent: list[float], baseline: list[float], alpha: float,
                   drop: float) -> dict[str, Any]:
    """Top-1 scores now vs a baseline: one-sided Mann-Whitney U (recent lower)."""
    res = stats.mannwhitneyu(recent, baseline, alternative="less")
    fall = float(np.median(baseline) - np.median(recent))
    return {"n_recent": len(recent), "n_baseline": len(baseline),
            "recent_median": float(np.median(recent)),
            "baseline_median": float(np.median(baseline)), "drop": fall,
            "p_value": float(res.pvalue), "falling": bool(res.pvalue < alpha and fall >= drop),
            "recent_scores": [round(x, 4) for x in recent],
            "baseline_scores": [round(x, 4) for x in baseline]}


@dataclass
class DriftReport:
    model: str
    resolved: str  # the model the name stands for now
    created_at: float
    queries: dict[str, Any]  # source, n, since
    config: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)  # a distance_test, or {"skipped"}
    evaluation: dict[str, Any] = field(default_factory=dict)
    abstention: dict[str, Any] = field(default_factory=dict)
    retrieval: dict[str, Any] = field(default_factory=dict)
    feedback: dict[str, Any] = field(default_factory=dict)
    recommendations: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Plan:
    """Everything checked before any work."""

    cfg: inp.DriftConfig
    info: Any
    names: set[str]
    queries: list[str]
    query_source: str
    since: float | None
    log: inp.Logged | None
    train: tuple[list[str], str] | None
    train_why: str
    evaluation: tuple[list[str], str] | None
    eval_config: str | None
    kb: str | None


def _plan(model: str, queries: str | Path | None, since: str | None, train: str | Path | None,
          eval_file: str | Path | None, kb: str | None, config: str | Path | None,
          settings: Settings) -> _Plan:
    cfg = inp.load_config(config)
    info = Catalog(settings).get(model)  # an unknown model or alias: NotFound now
    aliases = Aliases(settings)
    try:
        names = served_names(aliases, model)
    except NotFound:
        names = {model, info.id}
    if train is not None:
        tr = (inp.read_questions(train, "train"), str(train))
        why = str(train)
    else:
        path, why = inp.training_file(info, settings)
        tr = (inp.read_questions(path, "train"), why) if path is not None else None
    ev, eval_config = None, None
    if eval_file is not None:
        qs, kb_of_eval, test = inp.eval_questions(eval_file)
        ev = (qs, test)
        kb = kb or kb_of_eval
        if Path(eval_file).suffix.lower() in (".yaml", ".yml"):
            eval_config = str(Path(eval_file).resolve())
    if kb is not None:
        KnowledgeBases(settings).get(kb)  # an unknown base: NotFound now
    now = time.time()
    log, cutoff = None, None
    if queries is not None:
        qs = inp.read_questions(queries, "queries")
        source = str(queries)
        if since is not None:
            inp.parse_since(since, now)  # checked, though a file has no times
    else:
        cutoff = inp.parse_since(since, now)
        log = inp.logged(settings, names, cutoff)
        qs = [q for r in log.recent if (q := inp.logged_question(r))]
        source = "request log"
        if not qs:
            raise InvalidRequest(
                f"no queries: no logged request to {', '.join(sorted(names))} since "
                f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(cutoff))} (the server logs "
                "them with AFINAR_LOG_REQUESTS=on); give --queries FILE or an earlier --since",
                param="queries")
    return _Plan(cfg, info, names, qs, source, cutoff, log, tr, why, ev, eval_config, kb)


def _abstained(text: str, phrases: list[str]) -> bool:
    t = text.strip()
    return t.startswith(NOTHING_FOUND[:40]) or any(p in t for p in (NOT_IN_SOURCES, *phrases))


def _logged_abstention(p: _Plan) -> dict[str, Any]:
    def share(recs):
        marked = [r for r in recs if inp.grounded(r)]
        use = marked or recs
        hit = sum(any(_abstained(a, p.cfg.abstain_phrases) for a in inp.answers(r))
                  for r in use)
        return hit, len(use), bool(marked)

    hit, n, marked = share(p.log.recent)
    out = {"basis": "logged answers" + ("" if marked else " (none is marked grounded: all "
                                                          "of the window's answers)"),
           "n": n, "abstained": hit, "share": hit / n if n else None}
    e_hit, e_n, _ = share(p.log.earlier)
    if e_n:
        out.update(baseline_share=e_hit / e_n, n_baseline=e_n)
    out["high"] = bool(n >= p.cfg.min_queries and out["share"] >= p.cfg.max_abstain_share)
    return out


def _feedback(p: _Plan) -> dict[str, Any]:
    def rate(recs):
        rs = [x for r in recs for x in p.log.ratings.get(r.id, [])]
        return sum(x < 0 for x in rs), len(rs)

    neg, n = rate(p.log.recent)
    out = {"ratings": n, "negative": neg, "rate": neg / n if n else None}
    e_neg, e_n = rate(p.log.earlier)
    if e_n:
        out.update(baseline_rate=e_neg / e_n, baseline_ratings=e_n)
    out["high"] = bool(n >= p.cfg.min_ratings and out["rate"] >= p.cfg.max_negative_rate)
    return out


def _baseline(p: _Plan) -> tuple[list[str], str] | None:
    if p.log is not None:
        earlier = [q for r in p.log.earlier if (q := inp.logged_question(r))]
        if len(earlier) >= p.cfg.min_queries:
            return earlier, "earlier logged requests"
    if p.evaluation is not None:
        return p.evaluation[0], "evaluation questions"
    if p.train is not None:
        return p.train[0], "training questions"
    return None


def _retrieval(p: _Plan, settings: Settings, progress) -> tuple[dict, dict | None]:
    """(the retrieval test, the retrieval-only abstention share when the log has no answers)."""
    kbs = KnowledgeBases(settings)
    base = _baseline(p)

    def top1(qs: list[str], label: str) -> tuple[list[float], int]:
        scores, abstained = [], 0
        for i, q in enumerate(qs):
            scores.append(best_dense(kbs.search(p.kb, q, groups=None, k=1, mode="dense")) or 0.0)
            if p.log is None:
                abstained += not sources_for(kbs, p.kb, q, groups=None)
            progress(label, i + 1, len(qs))
        return scores, abstained

    recent, abst = top1(p.queries, "retrieval")
    abstention = None
    if p.log is None:
        share = abst / len(p.queries)
        abstention = {"basis": f"retrieval only: questions {p.kb} gives no source for",
                      "n": len(p.queries), "abstained": abst, "share": share,
                      "high": bool(len(p.queries) >= p.cfg.min_queries
                                   and share >= p.cfg.max_abstain_share)}
    if base is None or len(base[0]) < 2 or len(recent) < p.cfg.min_queries:
        return {"skipped": "no baseline questions to compare with (give --eval or --train)"
                if base is None else f"fewer than {p.cfg.min_queries} questions"}, abstention
    old, _ = top1(base[0], "baseline")
    out = {"kb": p.kb, "baseline": base[1],
           **retrieval_test(recent, old, p.cfg.alpha, p.cfg.retrieval_drop)}
    return out, abstention


def monitor(model: str, *, queries: str | Path | None = None, since: str | None = None,
            train: str | Path | None = None, eval_file: str | Path | None = None,
            kb: str | None = None, config: str | Path | None = None,
            settings: Settings | None = None,
            progress: Callable[[str, int, int], None] | None = None) -> DriftReport:
    """The drift report of ``model`` (see the module); every input is checked before any
    work. ``progress(stage, done, total)`` while questions are embedded and searched."""
    settings = settings or get_settings()
    progress = progress or (lambda *_: None)
    p = _plan(model, queries, since, train, eval_file, kb, config, settings)
    cfg = p.cfg
    report = DriftReport(model, p.info.id, time.time(),
                         {"source": p.query_source, "n": len(p.queries),
                          "since": p.since, "models": sorted(p.names)}, cfg.model_dump())
    embedder = get_embedder(cfg.embedding_model, settings)
    texts = list(dict.fromkeys(p.queries + (p.train[0] if p.train else [])
                               + (p.evaluation[0] if p.evaluation else [])))
    vecs = dict(zip(texts, embedder.encode(
        texts, progress=lambda n: progress("embedding", n, len(texts)))))

    def compare(ref: tuple[list[str], str] | None, why: str) -> dict[str, Any]:
        if ref is None:
            return {"skipped": why}
        if len(p.queries) < cfg.min_queries or len(ref[0]) < cfg.min_queries:
            return {"skipped": f"fewer than {cfg.min_queries} questions to compare "
                               f"({len(p.queries)} queries, {len(ref[0])} reference)",
                    "source": ref[1]}
        groups = (near_groups(p.queries + ref[0], cfg.near_duplicate)
                  if cfg.near_duplicate < 1 else None)
        out = distance_test(np.stack([vecs[q] for q in p.queries]),
                            np.stack([vecs[q] for q in ref[0]]),
                            permutations=cfg.permutations, seed=cfg.seed,
                            max_reference=cfg.max_reference, max_queries=cfg.max_queries,
                            alpha=cfg.alpha, min_effect=cfg.min_effect, groups=groups)
        return {"source": ref[1], **out}

    report.training = compare(p.train, p.train_why)
    report.evaluation = compare(p.evaluation, "no evaluation set given (--eval eval.yaml or "
                                "a test JSONL)")
    if p.kb is not None:
        report.retrieval, abstention = _retrieval(p, settings, progress)
    else:
        report.retrieval, abstention = {"skipped": "no knowledge base (--kb NAME, or the eval "
                                                   "config's knowledge_base)"}, None
    if p.log is not None:
        report.abstention = _logged_abstention(p)
        report.feedback = _feedback(p)
    else:
        report.abstention = abstention or {"skipped": "a query file has no answers: give --kb "
                                                      "to measure retrieval abstentions"}
        report.feedback = {"skipped": "a query file has no feedback (the request log has)"}
    report.recommendations = recommend(report, p, settings)
    return report


def _schedule_of(settings: Settings, kb: str) -> list[str] | None:
    for rec in Schedules(get_database(settings.db_url)).list():
        if rec.argv[:2] in (["kb", "sync"], ["kb", "watch"]) and rec.argv[2:3] == [kb]:
            return list(rec.argv)
    return None


def recommend(r: DriftReport, p: _Plan, settings: Settings) -> list[dict[str, Any]]:
    """The actions the thresholds ask for, each with its reasons and, where it can be queued
    (``afinar.store.schedules.SCHEDULABLE``), its command."""
    out: list[dict[str, Any]] = []

    def add(action, because, command, why_not=None):
        out.append({"action": action, "because": because, "command": command,
                    "why_not": why_not, "queued": None})

    resync = []
    if r.retrieval.get("falling"):
        resync.append(f"top-1 retrieval cosine fell from {r.retrieval['baseline_median']:.3f} "
                      f"to {r.retrieval['recent_median']:.3f} (p={r.retrieval['p_value']:.3g})")
    if r.abstention.get("high"):
        resync.append(f"{r.abstention['share']:.0%} of answers were 'not in the sources' "
                      f"(threshold {p.cfg.max_abstain_share:.0%})")
    if resync:
        argv = _schedule_of(settings, p.kb) if p.kb else None
        add(RESYNC, resync, argv, None if argv else (
            f"afinar kb sync {p.kb or 'NAME'} DIR by hand: no schedule of this base names its "
            "folder"))
    if r.evaluation.get("drifted"):
        e = r.evaluation
        add(EXTEND_EVAL, [f"questions are {e['effect']:.3f} farther from the evaluation set "
                          f"than it is from itself (p={e['p_value']:.3g}; "
                          f"{e['outside_share']:.0%} outside its 95th percentile)"], None,
            "an evaluation set is reviewed by a person: afinar data synth --as-eval drafts one")
    retrain = []
    if r.training.get("drifted"):
        t = r.training
        retrain.append(f"questions are {t['effect']:.3f} farther from the training data than "
                       f"it is from itself (p={t['p_value']:.3g}; {t['outside_share']:.0%} "
                       "outside its 95th percentile)")
    if r.feedback.get("high"):
        retrain.append(f"{r.feedback['rate']:.0%} of {r.feedback['ratings']} ratings were "
                       f"negative (threshold {p.cfg.max_negative_rate:.0%})")
    if retrain:
        argv, why_not = None, None
        try:
            a = Aliases(settings).get(r.model)
            eval_cfg = p.eval_config or (a.info.get("improve") or {}).get("eval_file")
            if eval_cfg:
                argv = ["improve", "--alias", r.model, "--eval", eval_cfg]
            else:
                why_not = "queueing afinar improve needs --eval eval.yaml"
        except NotFound:
            why_not = (f"{r.model} is not an alias: afinar improve re-trains an alias "
                       "(afinar models alias)")
        add(RETRAIN, retrain, argv, why_not)
    return out


def queue(report: DriftReport, settings: Settings | None = None) -> list[str]:
    """Queue each recommendation that has a command as a one-shot schedule (a worker runs it);
    the schedule ids."""
    settings = settings or get_settings()
    schedules, ids = Schedules(get_database(settings.db_url)), []
    for rec in report.recommendations:
        if rec["command"]:
            rec["queued"] = schedules.add(rec["command"], None).id
            ids.append(rec["queued"])
    return ids


__all__ = ["DriftReport", "distance_test", "monitor", "near_groups", "queue", "recommend",
           "retrieval_test"]
