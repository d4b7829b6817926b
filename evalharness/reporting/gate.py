"""Regression gates: decide pass / regressed / improved for every gated metric.

Paired tests on per-document scores when both runs logged the same documents (exact McNemar
for 0/1 scores, a seeded paired bootstrap otherwise); a z-test on the standard errors when only
aggregates exist. A metric regresses only when its drop is both larger than ``max_drop`` points
and significant at ``alpha`` after a Holm–Bonferroni correction across the gated metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from evalharness.core.errors import EvalHarnessError, UnknownNameError
from evalharness.core.registry import did_you_mean
from evalharness.reporting import significance as stats
from evalharness.reporting.runs import LoadedRun, load_run, metric_higher_is_better


class GateInputError(EvalHarnessError):
    """Runs that cannot be compared: different documents, prompts, shots or settings."""


DocKey = tuple[str, str, int | str]  # (task, subtask, doc_id)


@dataclass(frozen=True)
class GatedRun:
    """A loaded run with its samples indexed by document, as the gate pairs them."""

    run: LoadedRun
    docs: dict[DocKey, tuple[int, dict[str, Any]]] | None  # key -> (line in samples.jsonl, sample)

    @property
    def model(self) -> str:
        return self.run.model

    @property
    def results(self) -> dict[str, Any]:
        return self.run.results


def gated_run(run: LoadedRun) -> GatedRun:
    if run.samples is None:
        return GatedRun(run, None)
    docs: dict[DocKey, tuple[int, dict[str, Any]]] = {}
    for line, sample in enumerate(run.samples, start=1):
        key: DocKey = (sample["task"], str(sample.get("subtask", sample["task"])), sample["doc_id"])
        if key in docs:
            raise GateInputError(f"{run.samples_file}, line {line}: document {key[1]} {key[2]} is logged twice"
                                 f" (first on line {docs[key][0]})")
        docs[key] = (line, sample)
    return GatedRun(run, docs)


def load_gated_run(path: str | Path) -> GatedRun:
    return gated_run(load_run(path))


@dataclass(frozen=True)
class MetricVerdict:
    """One gated metric: both values, the test, and pass / regressed / improved."""

    task: str
    metric: str
    baseline: float
    candidate: float
    delta_points: float  # candidate - baseline, in points (percent)
    test: str
    p_value: float
    p_adjusted: float = 1.0
    verdict: str = "pass"
    detail: str = ""
    higher_is_better: bool = True


@dataclass
class GateReport:
    verdicts: list[MetricVerdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if any(v.verdict == "regressed" for v in self.verdicts) else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "result": "regressed" if self.exit_code else "pass",
            "verdicts": [asdict(v) for v in self.verdicts],
            "notes": self.notes,
        }


def check_options(*, alpha: float | None = None, max_drop: float | None = None, tolerance: float | None = None) -> None:
    """Reject option values that would silently switch gating off (NaN, alpha 0, a negative drop)."""
    if alpha is not None and not (math.isfinite(alpha) and 0 < alpha < 1):
        raise GateInputError(f"--alpha must be a number between 0 and 1 (exclusive), not {alpha!r}")
    for name, value in (("--max-drop", max_drop), ("--tolerance", tolerance)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise GateInputError(f"{name} must be a finite number of points >= 0, not {value!r}")


def _setting(run: GatedRun, *keys: str) -> Any:
    value: Any = run.results
    for key in keys:
        value = value.get(key, {}) if isinstance(value, dict) else None
    return value


def _check_comparable(base: GatedRun, cand: GatedRun, tasks: Sequence[str]) -> None:
    for key in ("gen_kwargs", "apply_chat_template"):
        a, b = _setting(base, "config", key), _setting(cand, "config", key)
        if a != b:
            raise GateInputError(f"decoding setting {key} differs: {a!r} vs {b!r}")
    for task in tasks:
        for key in ("version", "num_fewshot", "options"):
            a, b = _setting(base, "tasks", task, key), _setting(cand, "tasks", task, key)
            if a != b:
                raise GateInputError(f"{task}: {key} differs between the runs ({a!r} vs {b!r})")
    if base.docs is not None and cand.docs is not None:
        mine = {k for k in base.docs if k[0] in tasks}
        theirs = {k for k in cand.docs if k[0] in tasks}
        if mine != theirs:
            raise GateInputError(
                f"the runs logged different documents: {len(mine - theirs)} only in the baseline, "
                f"{len(theirs - mine)} only in the candidate (same --limit and tasks?)"
            )
        for doc in sorted(mine, key=str):
            if base.docs[doc][1]["prompt_hash"] != cand.docs[doc][1]["prompt_hash"]:
                raise GateInputError(f"{doc[1]} doc {doc[2]}: the prompt differs between the runs (prompt_hash)")


def _metrics(run: GatedRun) -> dict[tuple[str, str], dict[str, Any]]:
    return {(t, m): v for t, task in run.run.tasks.items() for m, v in task.get("metrics", {}).items()}


def select_metrics(base: GatedRun, cand: GatedRun, wanted: Sequence[str], notes: list[str] | None = None
                   ) -> list[tuple[str, str]]:
    """The (task, metric) pairs to gate: ``wanted`` (``TASK:METRIC``), or every metric both runs computed.

    A metric neither run computed (value null) is left out with a note; one that only one run
    computed, or a requested one that either run did not compute, is an input error.
    """
    base_metrics, cand_metrics = _metrics(base), _metrics(cand)
    shared = sorted(set(base_metrics) & set(cand_metrics))
    if wanted:
        names = [f"{t}:{m}" for t, m in shared]
        chosen = []
        for item in wanted:
            task, sep, metric = item.partition(":")
            if not sep or (task, metric) not in shared:
                raise UnknownNameError(f"--metric {item!r} is not in both runs{did_you_mean(item, names)}")
            chosen.append((task, metric))
    else:
        chosen = list(shared)
    gated = []
    for task, metric in chosen:
        missing = [who for who, table in (("baseline", base_metrics), ("candidate", cand_metrics))
                   if table[(task, metric)]["value"] is None]
        if not missing:
            gated.append((task, metric))
        elif len(missing) == 2 and not wanted:
            if notes is not None:
                notes.append(f"{task}:{metric} not computed in either run (value null); not gated")
        else:
            raise GateInputError(f"{task}:{metric} was not computed in the {' and the '.join(missing)}"
                                 " (value null), so it cannot be gated")
    if not gated:
        raise GateInputError("the runs share no computed task metric")
    return gated


def _per_document(side: GatedRun, who: str, keys: Sequence[DocKey], metric: str) -> list[float] | None:
    assert side.docs is not None
    values = []
    for key in keys:
        line, sample = side.docs[key]
        metrics = sample.get("metrics") or {}
        if metric not in metrics:
            return None  # not a per-document metric (e.g. a macro average or corpus ROUGE)
        value = metrics[metric]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise GateInputError(f"{side.run.samples_file}, line {line}: metrics.{metric} is {value!r} in the {who},"
                                 " not a finite number")
        values.append(float(value))
    return values


def _paired_values(base: GatedRun, cand: GatedRun, task: str, metric: str) -> tuple[list[float], list[float]] | None:
    if base.docs is None or cand.docs is None:
        return None
    keys = sorted((k for k in base.docs if k[0] == task), key=str)
    if not keys:
        return None
    a = _per_document(base, "baseline", keys, metric)
    b = _per_document(cand, "candidate", keys, metric)
    return (a, b) if a is not None and b is not None else None


def _direction(base: GatedRun, cand: GatedRun, task: str, metric: str) -> bool:
    """``higher_is_better`` from results.json (both runs must agree), else the old naming rule."""
    entries = [run.run.tasks[task]["metrics"][metric] for run in (base, cand)]
    flags = {e["higher_is_better"] for e in entries if "higher_is_better" in e}
    if len(flags) > 1:
        raise GateInputError(f"{task}:{metric}: higher_is_better differs between the runs")
    return flags.pop() if flags else metric_higher_is_better(None, metric)


def compare(
    base: GatedRun, cand: GatedRun, metrics: Sequence[str] = (), max_drop: float = 1.0, alpha: float = 0.05,
    seed: int = 0,
) -> GateReport:
    check_options(alpha=alpha, max_drop=max_drop)
    report = GateReport()
    chosen = select_metrics(base, cand, metrics, report.notes)
    _check_comparable(base, cand, sorted({t for t, _ in chosen}))
    if base.model != cand.model:
        report.notes.append(f"different models: baseline {base.model}, candidate {cand.model}")
    base_metrics, cand_metrics = _metrics(base), _metrics(cand)
    raw: list[MetricVerdict] = []
    for task, metric in chosen:
        b, c = base_metrics[(task, metric)], cand_metrics[(task, metric)]
        paired = _paired_values(base, cand, task, metric)
        if paired is not None and all(v in (0.0, 1.0) for v in paired[0] + paired[1]):
            only_base, only_cand, p = stats.mcnemar_exact(*paired)
            test, detail = "McNemar exact", f"right only in baseline {only_base}, only in candidate {only_cand}"
        elif paired is not None:
            p = stats.paired_bootstrap(*paired, seed=seed)
            test, detail = f"paired bootstrap (10,000, seed {seed})", f"{len(paired[0])} paired documents"
        else:
            p = stats.z_test(b["value"], b.get("stderr") or 0.0, c["value"], c.get("stderr") or 0.0)
            test, detail = "z-test on standard errors", "aggregates only"
        if not math.isfinite(p):
            raise GateInputError(f"{task}:{metric}: the {test} gave no p-value (p = {p!r})")
        raw.append(MetricVerdict(task, metric, b["value"], c["value"], 100 * (c["value"] - b["value"]), test, p,
                                 detail=detail, higher_is_better=_direction(base, cand, task, metric)))
    adjusted = stats.holm([v.p_value for v in raw])
    for verdict, p_adj in zip(raw, adjusted, strict=True):
        report.verdicts.append(_decide(verdict, p_adj, max_drop, alpha))
    report.notes.append(f"Holm–Bonferroni correction over {len(raw)} gated metric(s); alpha {alpha},"
                        f" max drop {max_drop} points")
    return report


def _decide(verdict: MetricVerdict, p_adjusted: float, max_drop: float, alpha: float) -> MetricVerdict:
    gain = verdict.delta_points if verdict.higher_is_better else -verdict.delta_points
    outcome = "pass"
    if p_adjusted < alpha and abs(gain) > max_drop:
        outcome = "improved" if gain > 0 else "regressed"
    return replace(verdict, p_adjusted=p_adjusted, verdict=outcome)


def compare_exact(base: GatedRun, cand: GatedRun, tolerance: float = 1e-5) -> GateReport:
    """Golden check: same documents, prompts and predictions; numbers within ``tolerance``."""
    check_options(tolerance=tolerance)
    if base.docs is None or cand.docs is None:
        raise GateInputError("--exact needs samples.jsonl in both runs")
    _check_comparable(base, cand, sorted({k[0] for k in base.docs}))
    report = GateReport()
    for key in sorted(base.docs, key=str):
        a, b = base.docs[key][1], cand.docs[key][1]
        for name in ("prediction", "gold", "metrics", "output"):
            if not _close(a.get(name), b.get(name), tolerance):
                detail = f"{key[1]} doc {key[2]}: {name} {a.get(name)!r} != {b.get(name)!r}"
                report.verdicts.append(
                    MetricVerdict(key[0], name, 0.0, 0.0, 0.0, "exact", 0.0, 0.0, "regressed", detail))
                return report
    report.notes.append(f"{len(base.docs)} documents identical (numbers within {tolerance:g})")
    return report


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and math.isclose(a, b, rel_tol=0, abs_tol=tolerance))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tolerance) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, tolerance) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def compare_card(cand: GatedRun, card: str, tolerance: float, alpha: float = 0.05) -> GateReport:
    """Gate a run against the card's published numbers, which carry no standard errors."""
    from evalharness.reporting.card import measured, reference

    check_options(alpha=alpha, tolerance=tolerance)
    raw = []
    for (task, metric), ref in sorted(reference(card).items()):
        m = measured(cand.results, task, metric)
        if not m or m.get("value") is None:
            continue
        ours, card_value = m["value"], ref.value
        se = m.get("stderr") or 0.0
        gain = (ours - card_value) if ref.higher_is_better else (card_value - ours)
        # One-sided: is our number credibly below the card's by more than the tolerance?
        shortfall = -gain - tolerance / 100
        p = 0.5 * stats.normal_two_sided(shortfall / se) if se and shortfall > 0 else (0.0 if shortfall > 0 else 1.0)
        raw.append(MetricVerdict(task, metric, card_value, ours, 100 * (ours - card_value), "vs card (our stderr only)",
                                 p, detail=f"{ref.source}; tolerance {tolerance} points",
                                 higher_is_better=ref.higher_is_better))
    if not raw:
        raise GateInputError(f"the run has none of the metrics the card {card!r} reports")
    report = GateReport(notes=[f"against the published {card} numbers: only our standard errors are known"])
    for verdict, p_adj in zip(raw, stats.holm([v.p_value for v in raw]), strict=True):
        outcome = "regressed" if p_adj < alpha and verdict.p_value < 1.0 else "pass"
        report.verdicts.append(replace(verdict, p_adjusted=p_adj, verdict=outcome))
    report.notes.append(f"Holm–Bonferroni correction over {len(raw)} metric(s); alpha {alpha}")
    return report
