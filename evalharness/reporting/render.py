"""Render a ``Report`` as GitHub-flavoured Markdown or one self-contained HTML file.

Templates live in ``reports/`` (installed as ``evalharness.reports``). The HTML environment has
autoescape on: prompts and model outputs (which may contain ``<script>``) are always text. Its
only script is the template's own, allowed by a Content-Security-Policy hash, so nothing else can
run even if markup slipped through; nothing is loaded from outside the file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from evalharness.reporting.report import Measure, Report, Row, RunColumn
from evalharness.reporting.runs import metric_higher_is_better

PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2")
CARD_COLOUR = "#9ca3af"


def _pct(value: float | None, decimals: int = 1) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{decimals}f}"


def _signed(value: float | None, decimals: int = 1) -> str:
    if value is None:
        return ""
    text = f"{value:+.{decimals}f}"
    return f"{0:.{decimals}f}" if float(text) == 0 else text


def _count(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _csp_hash(script: str) -> str:
    return base64.b64encode(hashlib.sha256(str(script).encode("utf-8")).digest()).decode("ascii")


def _html_text(text: str) -> str:
    """HTML's special characters as entities: GitHub renders raw HTML inside Markdown."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md(text: Any) -> Markup:
    """A Markdown table cell: HTML escaped (unless the template made it), no pipes or newlines."""
    safe = str(text) if isinstance(text, Markup) else _html_text(str(text))
    return Markup(safe.replace("|", "\\|").replace("\n", " "))


def _md_finalize(value: Any) -> Any:
    """Every ``{{ value }}`` in the Markdown template: text from a run (model names, outputs) is escaped."""
    if isinstance(value, Markup) or hasattr(value, "__html__"):
        return value
    return Markup(_html_text("" if value is None else str(value)))


def _md_join(items: Iterable[Any], separator: str = "") -> Markup:
    """Jinja's ``join`` for the Markdown template, escaping like ``_md_finalize`` (quotes stay quotes)."""
    return Markup(_html_text(separator).join(str(_md_finalize(item)) for item in items))


def environment(html: bool) -> jinja2.Environment:
    """HTML: Jinja's autoescape. Markdown: autoescape too (macros stay markup), but escaping only ``&<>``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(str(resources.files("evalharness.reports"))))),
        autoescape=True,
        finalize=None if html else _md_finalize,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(pct=_pct, signed=_signed, count=_count, csp_hash=_csp_hash, md=_md)
    if not html:
        env.filters["join"] = _md_join
    env.globals.update(status_text=status_text, colour=colour)
    return env


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def status_text(measure: Measure | None) -> str:
    """What a cell says when it has no number: not run, partial (which members ran), no metric."""
    if measure is None or measure.status == "not_run":
        return "not run"
    if measure.status == "no_metric":
        return "no metric"
    if measure.status == "partial" and measure.value is None:
        total = len(measure.ran) + len(measure.missing)
        ran = ", ".join(measure.ran)
        return f"partial ({len(measure.ran)} of {total}: {ran})" if total else "partial"
    return ""


# --- the bar chart ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    y: float
    width: float
    colour: str
    text: str
    title: str
    missing: bool = False


@dataclass(frozen=True)
class ChartRow:
    label: str
    y: float
    height: float
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    plot: int
    rows: tuple[ChartRow, ...]
    ticks: tuple[tuple[float, str], ...]
    legend: tuple[tuple[str, str], ...]


def chart(report: Report, width: int = 960) -> Chart:
    """Horizontal bars per group: the card's number, then each run's; 0–100 %."""
    left, right, bar_h, gap, pad, top = 220, 70, 14, 3, 12, 30
    plot = width - left - right
    rows, y = [], float(top)
    for row in report.groups + report.safety:
        label = row.label + (" (lower is better)" if not row.higher_is_better else "")
        bars = []
        reference = row.compare_to
        card_text = _pct(reference, row.decimals) if reference is not None else "no card value"
        if row.footnote and reference is not None:
            card_text = f"{_pct(reference, 2)} (rule; printed {_pct(row.card, row.decimals)})"
        bars.append(Bar(y, plot * (reference or 0) / 100, CARD_COLOUR, card_text, f"card: {card_text}",
                        reference is None))
        for i, (run, m) in enumerate(zip(report.runs, row.measures, strict=True)):
            by = y + (i + 1) * (bar_h + gap)
            if m.value is None:
                text = status_text(m)
                text = text if len(text) < 48 else text[:45] + "…"
                bars.append(Bar(by, 0, colour(i), text, f"{run.label}: {status_text(m)}", True))
            else:
                text = _pct(m.value, row.decimals)
                bar_width = plot * max(0.0, min(m.value, 100.0)) / 100
                bars.append(Bar(by, bar_width, colour(i), text, f"{run.label}: {text}"))
        height = len(bars) * (bar_h + gap) - gap
        rows.append(ChartRow(label, y, height, tuple(bars)))
        y += height + pad
    ticks = tuple((left + plot * t / 100, f"{t}") for t in range(0, 101, 20))
    legend = ((CARD_COLOUR, f"card: {report.model.label}"),) + tuple(
        (colour(i), r.label) for i, r in enumerate(report.runs))
    return Chart(width, int(y + 10), left, plot, tuple(rows), ticks, legend)


# --- the sample browser -------------------------------------------------------------------------


def _primary(report: Report) -> dict[str, str]:
    """task → the metric that decides right/wrong, from the card's headline numbers."""
    out: dict[str, str] = {}
    for b in report.card.benchmarks.values():
        if not b.part and not b.subtask and b.task not in out:
            out[b.task] = b.metric
    return out


def _higher_is_better(run: RunColumn, task: str, metric: str) -> bool:
    """The metric's direction as results.json records it (older files: the naming rule)."""
    entry = (run.task(task) or {}).get("metrics", {}).get(metric)
    return metric_higher_is_better(entry, metric)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def samples(report: Report, per_task: int = 200) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Up to ``per_task`` samples of each task of each run, spread over its subtasks."""
    primary = _primary(report)
    chosen: list[dict[str, Any]] = []
    totals: dict[str, int] = {}
    for index, run in enumerate(report.runs):
        by_task: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
        for record in run.run.samples or ():
            task = str(record.get("task", "?"))
            totals[task] = totals.get(task, 0) + 1
            subs = by_task.setdefault(task, {})
            bucket = subs.setdefault(str(record.get("subtask", task)), [])
            if len(bucket) < per_task:
                bucket.append(record)
        for task, subs in by_task.items():
            picked = _round_robin(list(subs.values()), per_task)
            metric = primary.get(task, "")
            for s in picked:
                metrics = s.get("metrics") or {}
                name = metric if metric in metrics else next(iter(metrics), "")
                score = metrics.get(name)
                higher = _higher_is_better(run, task, name)
                wrong = isinstance(score, (int, float)) and (score < 1 if higher else score > 0)
                chosen.append({
                    "run": run.label, "run_index": index, "task": task, "subtask": s.get("subtask", ""),
                    "doc_id": s.get("doc_id", ""), "prompt": s.get("prompt"), "output": _text(s.get("output")),
                    "prediction": _text(s.get("prediction")), "gold": _text(s.get("gold")),
                    "metric": name, "score": score, "wrong": wrong,
                    "metrics": ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                                         for k, v in metrics.items()),
                })
    return chosen, totals


def _round_robin(lists: Sequence[Sequence[Mapping[str, Any]]], limit: int) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    depth = 0
    while len(out) < limit and any(depth < len(lst) for lst in lists):
        out.extend(lst[depth] for lst in lists if depth < len(lst))
        depth += 1
    return out[:limit]


def run_info(runs: Sequence[RunColumn]) -> list[tuple[str, list[str]]]:
    """Provenance rows for the runs table: label → one value per run."""

    def get(run: RunColumn, *keys: str) -> Any:
        value: Any = run.results
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        return value

    rows: list[tuple[str, Any]] = [
        ("model", lambda r: r.model_name),
        ("weights sha256", lambda r: str(get(r, "model", "weights", "weights_sha256")
                                         or get(r, "model", "weights", "revision") or "—")[:12]),
        ("created", lambda r: get(r, "created") or "—"),
        ("harness", lambda r: f"{get(r, 'harness', 'version')} ({str(get(r, 'harness', 'git_sha') or '?')[:12]})"),
        ("device · dtype", lambda r: f"{get(r, 'model', 'device')} · {get(r, 'model', 'dtype')}"),
        ("seed · limit", lambda r: f"{get(r, 'config', 'seed')} · {r.limit or 'none'}"),
        ("tasks", lambda r: ", ".join(get(r, "config", "tasks") or [])),
        ("wall time", lambda r: f"{float(get(r, 'wall_time_s') or 0):.1f} s"),
        ("directory", lambda r: str(r.path)),
    ]
    return [(label, [str(fn(run)) for run in runs]) for label, fn in rows]


# --- entry points -------------------------------------------------------------------------------


def _benchmark_sections(report: Report) -> list[tuple[str, list[Row]]]:
    return [(row.label, row.members) for row in report.groups + report.safety]


def _context(report: Report) -> dict[str, Any]:
    return {
        "report": report, "runs": report.runs, "model": report.model, "card": report.card,
        "sections": _benchmark_sections(report), "run_info": run_info(report.runs),
    }


def render_markdown(report: Report) -> str:
    return environment(html=False).get_template("report.md.jinja").render(**_context(report))


def render_html(report: Report, samples_per_task: int = 200) -> str:
    picked, totals = samples(report, samples_per_task)
    tasks = sorted({s["task"] for s in picked})
    return environment(html=True).get_template("report.html.jinja").render(
        **_context(report), chart=chart(report), samples=picked, sample_totals=totals,
        sample_tasks=tasks, samples_per_task=samples_per_task,
    )
