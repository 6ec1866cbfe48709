"""The drift report as a self-contained HTML page (``afinar monitor --html``): the evaluation
report's style and its inline-SVG bars (``afinar.evals.report``), plus histograms of the
nearest-neighbour distances and of the retrieval scores. Nothing is fetched from anywhere; every
number comes from the ``DriftReport``'s dictionary."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment

from afinar.evals.report import STYLE, bar_chart
from afinar.store.atomic import atomic_write_text

QUERY, REFERENCE = "#d0603a", "#3a8fd0"


def histogram(a: list[float], b: list[float], labels: tuple[str, str], title: str,
              lo: float = 0.0, hi: float | None = None, bins: int = 20) -> str:
    """Two overlaid histograms (shares of each sample per bin) as inline SVG."""
    hi = hi if hi is not None else max([lo + 1e-6, *a, *b])
    edges = np.linspace(lo, hi, bins + 1)
    ha = np.histogram(a, edges)[0] / max(len(a), 1)
    hb = np.histogram(b, edges)[0] / max(len(b), 1)
    top = float(max(ha.max(initial=0), hb.max(initial=0))) or 1.0
    w, h, left, bottom = 600, 220, 40, 30
    bw = (w - left - 10) / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 40}" '
             f'role="img"><text x="0" y="14" font-size="13" font-weight="bold">'
             f'{html.escape(title)}</text>']
    for series, color, dx in ((hb, REFERENCE, 0.0), (ha, QUERY, bw / 2)):
        for i, v in enumerate(series):
            bh = (h - bottom - 24) * v / top
            parts.append(f'<rect x="{left + i * bw + dx:.1f}" y="{h - bottom - bh:.1f}" '
                         f'width="{bw / 2:.1f}" height="{bh:.1f}" fill="{color}"/>')
    for x in (0, bins // 2, bins):
        parts.append(f'<text x="{left + x * bw:.1f}" y="{h - bottom + 14}" font-size="11" '
                     f'text-anchor="middle">{edges[x]:.2f}</text>')
    parts.append(f'<text x="{left}" y="{h - 2}" font-size="12"><tspan fill="{QUERY}">&#9632; '
                 f'{html.escape(labels[0])} ({len(a)})</tspan>  <tspan fill="{REFERENCE}">'
                 f'&#9632; {html.escape(labels[1])} ({len(b)})</tspan></text></svg>')
    return "".join(parts)


TEMPLATE = """<!doctype html><html><head><meta charset="utf-8">
<title>afinar drift {{ r.model }}</title>
<style>
""" + STYLE + """</style></head><body>
<h1>Drift of {{ r.model }} <span class="small">{{ r.resolved }}</span></h1>
<p class="small">{{ r.queries.n }} questions from {{ r.queries.source }}{% if r.queries.since %}
since {{ since }}{% endif %}; significance level {{ r.config.alpha }}.</p>
<div class="advice"><h2>Recommendations</h2>{% if not r.recommendations %}<p>None: no signal
crossed its threshold.</p>{% endif %}<ul>{% for a in r.recommendations %}<li><b>{{ a.action }}</b>:
{{ "; ".join(a.because) }}.{% if a.queued %} Queued as {{ a.queued }}.{% elif a.command %}
Command: <code>afinar {{ " ".join(a.command) }}</code>{% else %} {{ a.why_not }}{% endif %}</li>
{% endfor %}</ul></div>
<h2>Signals</h2><table><tr><th>signal</th><th>value</th><th>compared with</th><th>test</th>
<th>flagged</th></tr>{% for s in signals %}<tr class="{{ 'bad' if s.flag else ('' if s.flag is
none else 'ok') }}"><td>{{ s.name }}</td><td>{{ s.value }}</td><td>{{ s.ref }}</td>
<td>{{ s.test }}</td><td>{{ 'n/a' if s.flag is none else ('yes' if s.flag else 'no') }}</td></tr>
{% endfor %}</table>
<div class="charts">{% for c in charts %}{{ c | safe }}{% endfor %}</div>
<p class="small">Distances are cosine distances (1 - cosine) of a question's embedding to its
nearest reference question; the reference's own are leave-one-out. The test re-splits the pooled
questions at random ({{ r.config.permutations }} resamples).</p></body></html>"""


def _distance(t: dict[str, Any]) -> dict[str, Any]:
    return {"value": f"mean {t['query_mean']:.3f}, {t['outside_share']:.0%} outside",
            "ref": f"mean {t['reference_mean']:.3f} ({t['n_reference']})",
            "test": f"p={t['p_value']:.3g}, +{t['effect']:.3f}", "flag": t["drifted"]}


def _abstention(a: dict[str, Any]) -> dict[str, Any]:
    ref = f"{a['baseline_share']:.0%} before" if a.get("baseline_share") is not None else ""
    return {"value": f"{a['share']:.0%} of {a['n']}", "ref": ref, "test": a["basis"],
            "flag": a["high"]}


def _retrieval(t: dict[str, Any]) -> dict[str, Any]:
    return {"value": f"median {t['recent_median']:.3f}",
            "ref": f"{t['baseline_median']:.3f} ({t['baseline']})",
            "test": f"p={t['p_value']:.3g}", "flag": t["falling"]}


def _feedback(f: dict[str, Any]) -> dict[str, Any]:
    value = "no ratings" if f["rate"] is None else f"{f['rate']:.0%} of {f['ratings']}"
    ref = f"{f['baseline_rate']:.0%} before" if f.get("baseline_rate") is not None else ""
    return {"value": value, "ref": ref, "test": "", "flag": f["high"]}


# the report's rows: the key in the result, the row's name, how a measured signal is shown
SIGNALS = (("training", "training distance", _distance),
           ("evaluation", "eval distance", _distance),
           ("abstention", "not in sources", _abstention),
           ("retrieval", "top-1 retrieval", _retrieval),
           ("feedback", "negative feedback", _feedback))


def signals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per signal: its name, value, what it is compared with, the test, the flag (None:
    not measured, with the reason as the value). Shared by the HTML page and the terminal."""
    return [{"name": name, "value": r[key]["skipped"], "ref": "", "test": "", "flag": None}
            if "skipped" in r[key] else {"name": name, **shown(r[key])}
            for key, name, shown in SIGNALS]


def render_html(r: dict[str, Any]) -> str:
    charts = []
    for key, label in (("training", "training data"), ("evaluation", "evaluation set")):
        t = r[key]
        if "skipped" not in t:
            charts.append(histogram(t["query_distances"], t["reference_distances"],
                                    ("queries", label + " (leave-one-out)"),
                                    f"nearest {label} question: cosine distance"))
            charts.append(bar_chart([("queries", t["query_mean"], None, None, QUERY),
                                     (label, t["reference_mean"], None, None, REFERENCE)],
                                    f"mean distance to the {label}", fmt="{:.3f}"))
    t = r["retrieval"]
    if "skipped" not in t:
        charts.append(histogram(t["recent_scores"], t["baseline_scores"],
                                ("current questions", t["baseline"]),
                                f"top-1 dense cosine in {t['kb']}", lo=0.0, hi=1.0))
    since = (time.strftime("%Y-%m-%d %H:%M", time.localtime(r["queries"]["since"]))
             if r["queries"].get("since") else "")
    return Environment(autoescape=True).from_string(TEMPLATE).render(
        r=r, signals=signals(r), charts=charts, since=since)


def write_html(report: dict[str, Any], out: str | Path) -> Path:
    return atomic_write_text(out, render_html(report))


__all__ = ["histogram", "render_html", "signals", "write_html"]
