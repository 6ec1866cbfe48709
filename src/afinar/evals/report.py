"""Reports of a finished run: a self-contained HTML page (inline SVG charts, a little inline
JavaScript to filter the per-example view; nothing fetched from anywhere) and a JSONL export of
the per-example view. Every number comes from the run's ``summary.json``."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment

from afinar.store.atomic import atomic_write_text

COLORS = {"base": "#8c8c8c", "few_shot": "#e0a030", "rag": "#3a8fd0", "fine_tuned": "#6a4fc0",
          "fine_tuned_rag": "#2a9d6f"}


def bar_chart(rows: list[tuple[str, float | None, float | None, float | None, str]],
              title: str, unit: str = "", vmax: float | None = None, fmt: str = "{:.2f}") -> str:
    """Horizontal bars (label, value, lo, hi, colour) with interval whiskers, as inline SVG."""
    vals = [v for _, v, _, hi, _ in rows for v in (v, hi) if v is not None]
    top = vmax if vmax is not None else (max(vals) if vals else 1.0) or 1.0
    w, left, bar_h, gap = 600, 230, 18, 8
    h = 28 + len(rows) * (bar_h + gap)
    scale = (w - left - 70) / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">',
             f'<text x="0" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for i, (label, v, lo, hi, color) in enumerate(rows):
        y = 24 + i * (bar_h + gap)
        parts.append(f'<text x="{left - 6}" y="{y + 13}" font-size="12" text-anchor="end">'
                     f'{html.escape(label if len(label) <= 34 else label[:33] + "…")}</text>')
        if v is None:
            parts.append(f'<text x="{left}" y="{y + 13}" font-size="12">n/a</text>')
            continue
        parts.append(f'<rect x="{left}" y="{y}" width="{max(v * scale, 1):.1f}" height="{bar_h}" '
                     f'fill="{color}"/>')
        if lo is not None and hi is not None:
            x0, x1, ym = left + lo * scale, left + hi * scale, y + bar_h / 2
            parts.append(f'<line x1="{x0:.1f}" y1="{ym}" x2="{x1:.1f}" y2="{ym}" stroke="#222"/>'
                         f'<line x1="{x0:.1f}" y1="{y + 4}" x2="{x0:.1f}" y2="{y + bar_h - 4}" '
                         f'stroke="#222"/><line x1="{x1:.1f}" y1="{y + 4}" x2="{x1:.1f}" '
                         f'y2="{y + bar_h - 4}" stroke="#222"/>')
        end = left + max(v, hi or v) * scale + 6
        parts.append(f'<text x="{end:.1f}" y="{y + 13}" font-size="12">{fmt.format(v)}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _ci(m: dict[str, Any] | None) -> str:
    if not m or m["mean"] is None:
        return "n/a"
    return f"{m['mean']:.2f} [{m['lo']:.2f}, {m['hi']:.2f}]"


def _num(v: float | None, fmt: str = "{:.0f}") -> str:
    return "n/a" if v is None else fmt.format(v)


# the reports' one look (the evaluation report, the drift report)
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.ok{background:#e6f5ea}.bad{background:#fbe9e9}
.advice{border-left:6px solid #2a9d6f;background:#f2faf6;padding:.6em 1em;margin:1em 0}
.charts{display:flex;flex-wrap:wrap;gap:24px}.small{color:#666;font-size:12px}
"""

TEMPLATE = """<!doctype html><html><head><meta charset="utf-8">
<title>afinar evaluation {{ run.name or run.id }}</title>
<style>
""" + STYLE + """pre{white-space:pre-wrap;margin:0;font-size:12px;max-width:340px}
</style></head><body>
<h1>Evaluation {{ run.name or "" }} <span class="small">{{ run.id }}</span></h1>
<p class="small">{{ n_cases }} cases from {{ run.test_file }}; main metric <b>{{ main }}</b>;
intervals are 95% bootstrap intervals over cases.</p>
<div class="advice"><h2>Recommendation: {{ advice.recommendation or "none" }}</h2>
<p><b>{{ advice.verdict or "" }}</b></p><ul>{% for r in advice.reasons %}<li>{{ r }}</li>
{% endfor %}</ul></div>
<h2>Quality</h2><table><tr><th>strategy</th><th>model</th>
{% for m in metrics %}<th>{{ m }}</th>{% endfor %}</tr>
{% for r in rows %}<tr><td>{{ r.name }}</td><td class="small">{{ r.model }}</td>
{% for m in metrics %}<td>{{ ci(r.metrics[m]) }}{% if r.metrics[m].notes %}<br><span
class="small">{% for k, v in r.metrics[m].notes.items() %}{{ k }}: {{ v }} {% endfor %}</span>
{% endif %}</td>{% endfor %}</tr>{% endfor %}</table>
<div class="charts">{% for c in quality_charts %}{{ c | safe }}{% endfor %}</div>
<h2>Cost</h2><table><tr><th>strategy</th><th>prompt tokens</th><th>added by examples or
sources</th><th>completion tokens</th><th>latency p50 / p95 (s)</th><th>tokens/s</th>
<th>training</th><th>errors</th></tr>
{% for r in rows %}<tr><td>{{ r.name }}</td><td>{{ num(r.cost.prompt_tokens) }}</td>
<td>{{ num(r.cost.added_prompt_tokens) }}</td><td>{{ num(r.cost.completion_tokens, "{:.1f}") }}</td>
<td>{{ num(r.cost.latency_p50_s, "{:.2f}") }} / {{ num(r.cost.latency_p95_s, "{:.2f}") }}</td>
<td>{{ num(r.cost.tokens_per_s, "{:.1f}") }}</td><td>{% if r.cost.training_s is defined %}
{{ num(r.cost.training_s) }} s, {{ num(r.cost.trained_tokens) }} tokens{% else %}-{% endif %}</td>
<td>{{ r.cost.errors }}</td></tr>{% endfor %}</table>
{% if latency %}<p class="small">{{ latency.note }}</p>{% endif %}
<div class="charts">{% for c in cost_charts %}{{ c | safe }}{% endfor %}</div>
{% if forgetting %}<h2>Forgetting check</h2><table><tr><th>model</th><th>perplexity base /
tuned</th><th>general accuracy base / tuned</th><th>flagged</th></tr>
{% for f in forgetting %}<tr class="{{ 'bad' if f.flagged else 'ok' }}"><td>{{ f.model }}</td>
<td>{{ "%.1f"|format(f.perplexity_base) }} / {{ "%.1f"|format(f.perplexity_tuned) }}</td>
<td>{{ "%.0f%%"|format(100 * f.accuracy_base) }} / {{ "%.0f%%"|format(100 * f.accuracy_tuned) }}
({{ f.n_questions }} questions)</td><td>{{ "; ".join(f.reasons) if f.flagged else "no" }}</td>
</tr>{% endfor %}</table>{% endif %}
<h2>Per example</h2>
<p>Show <select id="show"><option value="all">all cases</option><option value="wrong">cases
a strategy got wrong</option><option value="flip">cases that flipped against {{ baseline or
"base" }}</option></select> for <select id="who"><option value="">any strategy</option>
{% for r in rows %}<option>{{ r.name }}</option>{% endfor %}</select></p>
<table id="cases"><tr><th>case</th><th>question / reference</th>{% for r in rows %}
<th>{{ r.name }}</th>{% endfor %}</tr>
{% for c in cases %}<tr data-wrong="{{ wrong(c) }}" data-flip="{{ flips(c) }}">
<td>{{ c.case }}</td><td><pre>{{ c.question }}</pre><hr><pre>{{ c.reference }}</pre></td>
{% for r in rows %}{% set x = c.results[r.name] %}<td class="{{ cls(x) }}"><pre>{{ x.error or
x.text }}</pre>{% if x.flip == 1 %}<b>fixed</b>{% elif x.flip == -1 %}<b>broke</b>{% endif %}
{% if x.notes %}<div class="small">{% for k, v in x.notes.items() %}{{ k }}: {{ v }}<br>
{% endfor %}</div>{% endif %}{% if x.sources %}<div class="small">sources: {{
", ".join(x.sources) }}</div>{% endif %}</td>{% endfor %}</tr>{% endfor %}</table>
<script>
function apply(){var s=document.getElementById('show').value,w=document.getElementById('who').value;
document.querySelectorAll('#cases tr[data-wrong]').forEach(function(tr){
var names=JSON.parse(tr.getAttribute(s==='flip'?'data-flip':'data-wrong'));
tr.style.display=(s==='all'||(w?names.indexOf(w)>=0:names.length>0))?'':'none';});}
document.getElementById('show').onchange=apply;document.getElementById('who').onchange=apply;
</script></body></html>"""


def render_html(summary: dict[str, Any]) -> str:
    main = summary["main_metric"]
    rows = summary["strategies"]
    metrics = summary["run"]["metrics"]

    def color(r):
        return COLORS.get(r["type"], "#555")

    quality = [bar_chart([(r["name"], r["metrics"][m]["mean"], r["metrics"][m]["lo"],
                           r["metrics"][m]["hi"], color(r)) for r in rows], m, vmax=1.0)
               for m in [main] + [m for m in metrics if m != main]]
    costs = [bar_chart([(r["name"], r["cost"]["prompt_tokens"], None, None, color(r))
                        for r in rows], "prompt tokens per request", fmt="{:.0f}"),
             bar_chart([(r["name"], r["cost"]["latency_p50_s"], None, r["cost"]["latency_p95_s"],
                         color(r)) for r in rows], "latency p50 (s; whisker to p95)", " s")]

    def cls(x):
        v = x["scores"].get(main)
        return "" if v is None else ("ok" if v >= 0.5 else "bad")

    def wrong(c):
        return json.dumps([n for n, x in c["results"].items()
                           if (v := x["scores"].get(main)) is not None and v < 0.5])

    def flips(c):
        return json.dumps([n for n, x in c["results"].items() if x.get("flip")])

    env = Environment(autoescape=True)
    return env.from_string(TEMPLATE).render(
        run=summary["run"], n_cases=summary["n_cases"], main=main, advice=summary["advice"],
        latency=summary.get("latency"),
        rows=rows, metrics=metrics, ci=_ci, num=_num, quality_charts=quality, cost_charts=costs,
        forgetting=summary.get("forgetting") or [], cases=summary["cases"], cls=cls,
        wrong=wrong, flips=flips, baseline=summary.get("baseline"))


def write_html(summary: dict[str, Any], out: str | Path) -> Path:
    return atomic_write_text(out, render_html(summary))


def write_jsonl(summary: dict[str, Any], out: str | Path) -> Path:
    """One line per (case, strategy): the answer, its scores and notes, and its flip."""
    lines = []
    for c in summary["cases"]:
        for name, x in c["results"].items():
            lines.append(json.dumps({"case": c["case"], "line": c["line"], "strategy": name,
                                     "question": c["question"], "reference": c["reference"],
                                     **x}))
    return atomic_write_text(out, "".join(x + "\n" for x in lines))
