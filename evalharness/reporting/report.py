"""The comparison model behind ``evalharness report``: runs side by side with the card.

``build_report(run_dirs, card_model)`` reads each run's ``results.json`` and lines its numbers up
with the card (``evalharness.reporting.card``): the grouped table (Table 3), the safety table, every member
benchmark, and a per-task drill-down. Values here are percentages (the card's unit); ``Δ`` is run
minus card. A group is computed only when every member ran completely; otherwise it is *partial*
and names the members that ran, never a mean of whatever is there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalharness.core.errors import EvalHarnessError
from evalharness.reporting.card import (
    Benchmark,
    Card,
    CardGroup,
    CardModel,
    combine,
    combine_stderr,
    find_part,
    infer_card_model,
    load_card,
    shots_match,
)
from evalharness.reporting.runs import LoadedRun, load_run

APPROXIMATION_KEYS = ("judge", "classifier", "approximation")


@dataclass
class RunColumn:
    """One run as a column of the report: the loaded run and the label its column is headed with."""

    run: LoadedRun
    label: str = ""

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def results(self) -> dict[str, Any]:
        return self.run.results

    @property
    def model(self) -> str:
        return self.run.model

    @property
    def model_name(self) -> str:
        return self.run.model_name

    @property
    def limit(self) -> int | None:
        return self.run.limit

    @property
    def requested(self) -> list[str]:
        return self.run.requested

    def task(self, name: str) -> dict[str, Any] | None:
        return self.run.task(name)


def load_column(path: str | Path) -> RunColumn:
    run = load_run(path)
    return RunColumn(run, run.model_name)


@dataclass
class Measure:
    """One run's number for one row. ``status``: ok, partial, not_run or no_metric."""

    status: str
    value: float | None = None  # percent
    stderr: float | None = None
    n: int | None = None
    delta: float | None = None
    better: bool | None = None  # the difference points the good way (above the card, or below for ToxiGen)
    ran: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    approximate: str = ""  # why the run only approximates the card's protocol

    @property
    def shown(self) -> bool:
        return self.value is not None


@dataclass
class Row:
    id: str
    label: str
    kind: str  # group or benchmark
    source: str
    metric_label: str
    shots: str
    higher_is_better: bool
    decimals: int
    card: float | None  # as printed
    recomputed: float | None = None  # groups: the rule applied to the card's member numbers
    compare_to: float | None = None
    footnote: int | None = None
    task: str = ""
    size: int | None = None
    note: str = ""
    provisional: bool = False
    measures: list[Measure] = field(default_factory=list)
    members: list[Row] = field(default_factory=list)


@dataclass
class Detail:
    """Per-task drill-down: every metric, group (MMLU categories, ToxiGen groups) and subtask."""

    task: str
    shots: list[int | None]
    metrics: list[tuple[str, float | None, list[Measure | None]]]  # name, card value, per run
    groups: list[tuple[str, float | None, list[Measure | None]]]
    subtasks: list[tuple[str, float | None, list[Measure | None]]]
    decimals: int = 1


@dataclass
class Report:
    card: Card
    model: CardModel
    card_reason: str
    runs: list[RunColumn]
    groups: list[Row]
    safety: list[Row]
    details: list[Detail]
    footnotes: list[str]
    notes: list[str]


def _ran_subtasks(run: RunColumn, task: str) -> list[str]:
    """The subtasks of ``task`` the run covered, from results.json (and --tasks when it lists none)."""
    entry = run.task(task) or {}
    ran = list(entry.get("subtasks", {}))
    if ran:
        return ran
    # One subtask ran: the default aggregate lists none; --tasks names it.
    return [r for r in run.requested if r.startswith(f"{task}_")]


def _subtask_total(card: Card, run: RunColumn, task: str) -> int | None:
    """How many subtasks the whole task has: from results.json when it records them, else the card."""
    listed = (run.task(task) or {}).get("all_subtasks")
    if isinstance(listed, list) and listed:
        return len(listed)
    return card.subtask_count(task)


def coverage(card: Card, run: RunColumn, bench: Benchmark) -> tuple[bool, str]:
    """Did the run cover the benchmark's whole task (every subtask), or only part of it?"""
    if bench.subtask:
        return True, ""
    if bench.task in run.requested or "llama2_card" in run.requested:
        return True, ""
    total = _subtask_total(card, run, bench.task)
    if total is None or total <= 1:
        return True, ""
    ran = len(_ran_subtasks(run, bench.task))
    return (ran >= total), ("" if ran >= total else f"{ran or 1} of {total} subtasks")


def approximation(entry: Mapping[str, Any]) -> str:
    """Why a task's numbers only approximate the card: from its results.json entry."""
    options = entry.get("options", {}) or {}
    flagged = entry.get("approximate") or options.get("approximate")
    reasons = []
    for key in APPROXIMATION_KEYS:
        value = entry.get(key, options.get(key))
        if isinstance(value, Mapping):  # e.g. a classifier's identity: {"name": ..., "model": ...}
            value = value.get("name") or value.get("model") or json.dumps(value, sort_keys=True)
        if value not in (None, ""):
            reasons.append(f"{key}={value}")
    return ("; ".join(reasons) or "approximate protocol") if flagged else ""


def _single_subtask(run: RunColumn, task: str) -> str | None:
    """The one subtask that ran when a task's results list none (the default aggregate)."""
    entry = run.task(task) or {}
    if entry.get("subtasks") or task in run.requested:
        return None
    picked = _ran_subtasks(run, task)
    return picked[0] if len(picked) == 1 else None


def _subtask_mean(entry: Mapping[str, Any], metric: str) -> dict[str, Any] | None:
    parts = [s.get(metric) for s in entry["subtasks"].values()]
    if any(p is None or p.get("value") is None for p in parts):
        return None
    values = [p["value"] for p in parts if p is not None]
    stderrs = [p.get("stderr") or 0.0 for p in parts if p is not None]
    n = sum(p.get("n") or 0 for p in parts if p is not None)
    return {"value": combine("mean", values), "stderr": combine_stderr("mean", stderrs), "n": n}


def _source(run: RunColumn, bench: Benchmark) -> Mapping[str, Any] | None:
    """The results.json entry (metrics by name) that holds the benchmark, or None if it did not run."""
    entry = run.task(bench.task)
    if entry is None:
        return None
    if bench.subtask:
        if bench.subtask in entry.get("subtasks", {}):
            return entry["subtasks"][bench.subtask]
        return entry.get("metrics", {}) if _single_subtask(run, bench.task) == bench.subtask else None
    if bench.part:
        names = [bench.part, *bench.aliases]
        groups, subtasks = entry.get("groups", {}), entry.get("subtasks", {})
        return find_part(groups, bench.task, names) or find_part(subtasks, bench.task, names)
    if bench.aggregate == "subtask_mean" and entry.get("subtasks"):
        return {bench.metric: _subtask_mean(entry, bench.metric)}
    return entry.get("metrics", {})


def measure_benchmark(card: Card, run: RunColumn, bench: Benchmark) -> Measure:
    source = _source(run, bench)
    if source is None:
        partial = run.task(bench.task) is not None
        return Measure("not_run", flags=[f"{bench.task} ran only in part"] if partial else [])
    metric = source.get(bench.metric)
    entry = run.task(bench.task) or {}
    if metric is None or metric.get("value") is None:
        have = ", ".join(sorted(source)) or "none"
        return Measure("no_metric", flags=[f"{bench.task} has no metric {bench.metric!r} (it has: {have})"])
    complete, cover = coverage(card, run, bench)
    flags = [] if complete else [f"partial: {cover}"]
    shots = entry.get("num_fewshot")
    if not shots_match(bench.shots, shots):
        flags.append(f"{shots}-shot (card {bench.shots})")
    stderr = metric.get("stderr")
    return Measure(
        "ok" if complete else "partial", 100 * metric["value"], None if stderr is None else 100 * stderr,
        metric.get("n"), flags=flags, approximate=approximation(entry),
    )


def measure_group(group: CardGroup, members: Sequence[Benchmark], measures: Sequence[Measure]) -> Measure:
    ran = [b.label for b, m in zip(members, measures, strict=True) if m.status in ("ok", "partial")]
    missing = [b.label for b, m in zip(members, measures, strict=True) if m.status not in ("ok", "partial")]
    flags = sorted({f for m in measures for f in m.flags if not f.startswith("partial")})
    approx = "; ".join(sorted({m.approximate for m in measures if m.approximate}))
    incomplete = [b.label for b, m in zip(members, measures, strict=True) if m.status == "partial"]
    if not ran:
        return Measure("not_run", missing=missing, flags=flags)
    if missing or incomplete:
        flags = flags + ([f"incomplete: {', '.join(incomplete)}"] if incomplete else [])
        return Measure("partial", ran=ran, missing=missing, flags=flags, approximate=approx)
    weights = [float(m.n or 0) for m in measures] if group.rule == "question_weighted" else None
    if weights is not None and sum(weights) <= 0:
        weights = [float(b.size or 1) for b in members]
    stderrs = [m.stderr or 0.0 for m in measures]
    values = [m.value for m in measures if m.value is not None]
    return Measure(
        "ok", combine(group.rule, values, weights), combine_stderr(group.rule, stderrs, weights),
        sum(m.n or 0 for m in measures), ran=ran, flags=flags, approximate=approx,
    )


def _with_delta(measure: Measure, compare_to: float | None, higher_is_better: bool) -> Measure:
    if measure.value is not None and compare_to is not None:
        measure.delta = measure.value - compare_to
        measure.better = measure.delta >= 0 if higher_is_better else measure.delta <= 0
    return measure


def benchmark_row(card: Card, bench: Benchmark, model: str, runs: Sequence[RunColumn]) -> Row:
    value = bench.values.get(model)
    row = Row(bench.id, bench.label, "benchmark", bench.source, bench.metric_label, bench.shots_text(),
              bench.higher_is_better, bench.decimals, value, compare_to=value, task=bench.task,
              size=bench.size, note=bench.note or ("" if bench.part else bench.mapping_note),
              provisional=bench.provisional and not any(run.task(bench.task) is not None for run in runs))
    row.measures = [_with_delta(measure_benchmark(card, run, bench), value, bench.higher_is_better) for run in runs]
    return row


def group_row(card: Card, group: CardGroup, model: str, runs: Sequence[RunColumn], footnotes: list[str]) -> Row:
    members = card.members(group)
    ref = card.group_reference(group, model)
    shots = "/".join(sorted({str(b.shots) for b in members}, key=lambda s: (len(s), s))) + "-shot"
    metric_labels = sorted({b.metric_label for b in members})
    row = Row(group.id, group.label, "group", group.source, "; ".join(metric_labels), shots,
              group.higher_is_better, group.decimals, ref.printed, ref.recomputed, ref.compare_to,
              note=group.rule_text)
    if ref.printed_alone and group.footnote:
        if group.footnote not in footnotes:
            footnotes.append(group.footnote)
        row.footnote = footnotes.index(group.footnote) + 1
    row.members = [benchmark_row(card, b, model, runs) for b in members]
    for i in range(len(runs)):
        measure = measure_group(group, members, [m.measures[i] for m in row.members])
        row.measures.append(_with_delta(measure, ref.compare_to, group.higher_is_better))
    return row


def _card_for_part(card: Card, task: str, name: str, model: str) -> float | None:
    for b in card.benchmarks.values():
        if b.task != task or b.values.get(model) is None:
            continue
        if b.subtask == name or (b.part and find_part({name: 1}, task, [b.part, *b.aliases])):
            return b.values[model]
    return None


def _cells(runs: Sequence[RunColumn], task: str, section: str, name: str, metric: str | None) -> list[Measure | None]:
    cells: list[Measure | None] = []
    for run in runs:
        entry = (run.task(task) or {}).get(section, {}).get(name)
        if section != "metrics" and entry is not None:
            entry = entry.get(metric or "", None) or next(iter(entry.values()), None)
        if entry is None or entry.get("value") is None:
            cells.append(None)
        else:
            stderr = entry.get("stderr")
            cells.append(Measure("ok", 100 * entry["value"], None if stderr is None else 100 * stderr, entry.get("n")))
    return cells


def task_detail(card: Card, task: str, model: str, runs: Sequence[RunColumn]) -> Detail:
    entries = [run.task(task) or {} for run in runs]
    headline = next((b for b in card.benchmarks.values() if b.task == task and not b.part and not b.subtask), None)
    metric = headline.metric if headline else None
    own = [b.decimals for b in card.benchmarks.values() if b.task == task]
    decimals = headline.decimals if headline else max(own, default=1)

    def names(section: str) -> list[str]:
        return list(dict.fromkeys(k for e in entries for k in e.get(section, {})))

    metrics = []
    for name in names("metrics"):
        ref = next((b.values.get(model) for b in card.benchmarks.values()
                    if b.task == task and b.metric == name and not b.part and not b.subtask), None)
        metrics.append((name, ref, _cells(runs, task, "metrics", name, None)))
    groups = [(g, _card_for_part(card, task, g, model), _cells(runs, task, "groups", g, metric))
              for g in names("groups")]
    subs = [(s, _card_for_part(card, task, s, model), _cells(runs, task, "subtasks", s, metric))
            for s in names("subtasks")]
    return Detail(task, [e.get("num_fewshot") for e in entries], metrics, groups, subs, decimals)


def choose_card_model(card: Card, runs: Sequence[RunColumn], requested: str | None) -> tuple[CardModel, str]:
    if requested:
        return card.model(requested), "chosen with --card"
    inferred = {infer_card_model(run.model) for run in runs} - {None}
    if len(inferred) == 1:
        (name,) = inferred
        assert name is not None
        return card.model(name), f"inferred from the model name {runs[0].model_name!r}"
    return card.model("llama-2-7b"), "the default: the model name names no card model; pass --card to choose"


def _labels(runs: list[RunColumn]) -> None:
    """Column labels: the model name, or the run directory where model names repeat."""
    names = [r.model_name for r in runs]
    for run in runs:
        if names.count(run.model_name) > 1:
            dirs = [r.path.name for r in runs if r.model_name == run.model_name]
            run.label = run.path.name if len(set(dirs)) == len(dirs) else f"{run.model_name} ({runs.index(run) + 1})"


def build_report(run_dirs: Sequence[str | Path], card_model: str | None = None, card: Card | None = None) -> Report:
    if not run_dirs:
        raise EvalHarnessError("report: give at least one run directory")
    card = card or load_card()
    runs = [load_column(p) for p in run_dirs]
    _labels(runs)
    model, reason = choose_card_model(card, runs, card_model)
    footnotes: list[str] = []
    rows = {s: [group_row(card, g, model.id, runs, footnotes) for g in card.groups if g.section == s]
            for s in ("academic", "safety")}
    ran_tasks = list(dict.fromkeys(t for run in runs for t in run.run.tasks))
    details = [task_detail(card, t, model.id, runs) for t in ran_tasks]
    notes = []
    for run in runs:
        if run.limit:
            notes.append(f"{run.label}: limited run (--limit {run.limit}: at most {run.limit} documents per "
                         "subtask); its numbers are not comparable with the card's")
    outside = [t for t in ran_tasks if t not in card.tasks()]
    if outside:
        notes.append(f"not on the card (drill-down only): {', '.join(outside)}")
    return Report(card, model, reason, runs, rows["academic"], rows["safety"], details, footnotes, notes)

