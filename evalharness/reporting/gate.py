"""Regression gates: decide pass / regressed / improved for every gated metric.

Paired tests on per-document scores when both runs logged the same documents (exact McNemar
for 0/1 scores, a seeded paired bootstrap otherwise); a z-test on the standard errors when only
aggregates exist. A metric regresses only when its drop is both larger than ``max_drop`` points
and significant at ``alpha`` after a Holm–Bonferroni correction across the gated metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalharness.reporting import significance as stats
from evalharness.core.errors import EvalHarnessError, UnknownNameError
from evalharness.core.registry import did_you_mean

LOWER_IS_BETTER = ("toxic",)  # metric names containing these improve downwards


class GateInputError(EvalHarnessError):
    """Runs that cannot be compared: different documents, prompts, shots or settings."""


@dataclass(frozen=True)
class Run:
    path: Path
    results: dict[str, Any]
    samples: dict[tuple[str, str, int], dict[str, Any]] | None  # (task, subtask, doc_id) -> sample

    @property
    def model(self) -> str:
        return str(self.results.get("config", {}).get("model", "?"))


def load_run(path: str | Path) -> Run:
    path = Path(path)
    folder, results_file = (path, path / "results.json") if path.is_dir() else (path.parent, path)
    if not results_file.is_file():
        raise GateInputError(f"{path}: no results.json")
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise GateInputError(f"{results_file}: unreadable results ({exc})") from None
    if results.get("schema_version") != 1:
        raise GateInputError(f"{results_file}: unsupported schema_version {results.get('schema_version')!r}")
    samples_file = folder / "samples.jsonl"
    samples = None
    if samples_file.is_file():
        samples = {}
        for line_no, line in enumerate(samples_file.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                sample = json.loads(line)
                samples[(sample["task"], sample["subtask"], int(sample["doc_id"]))] = sample
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise GateInputError(f"{samples_file}, line {line_no}: not a sample record") from None
    return Run(path, results, samples)


@dataclass(frozen=True)
class Verdict:
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


@dataclass
class GateReport:
    verdicts: list[Verdict] = field(default_factory=list)
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


def _check_comparable(base: Run, cand: Run, tasks: Sequence[str]) -> None:
    def setting(run: Run, *keys: str) -> Any:
        value: Any = run.results
        for key in keys:
            value = value.get(key, {}) if isinstance(value, dict) else None
        return value

    for key in ("gen_kwargs", "apply_chat_template"):
        if setting(base, "config", key) != setting(cand, "config", key):
            raise GateInputError(f"decoding setting {key} differs: {setting(base, 'config', key)!r} vs {setting(cand, 'config', key)!r}")
    for task in tasks:
        for key in ("version", "num_fewshot", "options"):
            a, b = setting(base, "tasks", task, key), setting(cand, "tasks", task, key)
            if a != b:
                raise GateInputError(f"{task}: {key} differs between the runs ({a!r} vs {b!r})")
    if base.samples is not None and cand.samples is not None:
        mine = {k for k in base.samples if k[0] in tasks}
        theirs = {k for k in cand.samples if k[0] in tasks}
        if mine != theirs:
            raise GateInputError(
                f"the runs logged different documents: {len(mine - theirs)} only in the baseline, "
                f"{len(theirs - mine)} only in the candidate (same --limit and tasks?)"
            )
        for key in sorted(mine):
            if base.samples[key]["prompt_hash"] != cand.samples[key]["prompt_hash"]:
                raise GateInputError(f"{key[1]} doc {key[2]}: the prompt differs between the runs (prompt_hash)")


def _metrics(run: Run) -> dict[tuple[str, str], dict[str, Any]]:
    return {(t, m): v for t, task in run.results.get("tasks", {}).items() for m, v in task.get("metrics", {}).items()}


def select_metrics(base: Run, cand: Run, wanted: Sequence[str]) -> list[tuple[str, str]]:
    shared = sorted(set(_metrics(base)) & set(_metrics(cand)))
    if not wanted:
        if not shared:
            raise GateInputError("the runs share no task metric")
        return shared
    chosen = []
    names = [f"{t}:{m}" for t, m in shared]
    for item in wanted:
        task, sep, metric = item.partition(":")
        if not sep or (task, metric) not in shared:
            raise UnknownNameError(f"--metric {item!r} is not in both runs{did_you_mean(item, names)}")
        chosen.append((task, metric))
    return chosen


def _paired_values(base: Run, cand: Run, task: str, metric: str) -> tuple[list[float], list[float]] | None:
    if base.samples is None or cand.samples is None:
        return None
    keys = sorted(k for k in base.samples if k[0] == task)
    try:
        a = [float(base.samples[k]["metrics"][metric]) for k in keys]
        b = [float(cand.samples[k]["metrics"][metric]) for k in keys]
    except KeyError:
        return None  # not a per-document metric (e.g. a macro average or corpus ROUGE)
    return (a, b) if keys else None


def compare(
    base: Run, cand: Run, metrics: Sequence[str] = (), max_drop: float = 1.0, alpha: float = 0.05, seed: int = 0
) -> GateReport:
    chosen = select_metrics(base, cand, metrics)
    _check_comparable(base, cand, sorted({t for t, _ in chosen}))
    report = GateReport()
    if base.model != cand.model:
        report.notes.append(f"different models: baseline {base.model}, candidate {cand.model}")
    base_metrics, cand_metrics = _metrics(base), _metrics(cand)
    raw: list[Verdict] = []
    for task, metric in chosen:
        b, c = base_metrics[(task, metric)], cand_metrics[(task, metric)]
        paired = _paired_values(base, cand, task, metric)
        if paired is not None and all(v in (0.0, 1.0) for v in paired[0] + paired[1]):
            only_base, only_cand, p = stats.mcnemar_exact(*paired)
            test, detail = "McNemar exact", f"right only in baseline {only_base}, only in candidate {only_cand}"
        elif paired is not None:
            p = stats.paired_bootstrap(*paired, seed=seed)
            test, detail = "paired bootstrap (10,000, seed %d)" % seed, f"{len(paired[0])} paired documents"
        else:
            p = stats.z_test(b["value"], b.get("stderr") or 0.0, c["value"], c.get("stderr") or 0.0)
            test, detail = "z-test on standard errors", "aggregates only"
        raw.append(Verdict(task, metric, b["value"], c["value"], 100 * (c["value"] - b["value"]), test, p, detail=detail))
    adjusted = stats.holm([v.p_value for v in raw])
    for verdict, p_adj in zip(raw, adjusted):
        report.verdicts.append(_decide(verdict, p_adj, max_drop, alpha))
    report.notes.append(f"Holm–Bonferroni correction over {len(raw)} gated metric(s); alpha {alpha}, max drop {max_drop} points")
    return report


def _decide(verdict: Verdict, p_adjusted: float, max_drop: float, alpha: float) -> Verdict:
    lower_better = any(word in verdict.metric for word in LOWER_IS_BETTER)
    gain = -verdict.delta_points if lower_better else verdict.delta_points
    outcome = "pass"
    if p_adjusted < alpha and abs(gain) > max_drop:
        outcome = "improved" if gain > 0 else "regressed"
    return Verdict(**{**asdict(verdict), "p_adjusted": p_adjusted, "verdict": outcome})


def compare_exact(base: Run, cand: Run, tolerance: float = 1e-5) -> GateReport:
    """Golden check: same documents, prompts and predictions; numbers within ``tolerance``."""
    if base.samples is None or cand.samples is None:
        raise GateInputError("--exact needs samples.jsonl in both runs")
    _check_comparable(base, cand, sorted({k[0] for k in base.samples}))
    report = GateReport()
    for key in sorted(base.samples):
        a, b = base.samples[key], cand.samples[key]
        for name in ("prediction", "gold", "metrics", "output"):
            if not _close(a.get(name), b.get(name), tolerance):
                report.verdicts.append(Verdict(key[0], name, 0.0, 0.0, 0.0, "exact", 0.0, 0.0, "regressed",
                                               f"{key[1]} doc {key[2]}: {name} {a.get(name)!r} != {b.get(name)!r}"))
                return report
    report.notes.append(f"{len(base.samples)} documents identical (numbers within {tolerance:g})")
    return report


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=0, abs_tol=tolerance)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tolerance) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, tolerance) for x, y in zip(a, b))
    return bool(a == b)


def compare_card(cand: Run, card: str, tolerance: float, alpha: float = 0.05) -> GateReport:
    """Gate a run against the card's published numbers, which carry no standard errors."""
    from evalharness.reporting.card import measured, reference

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
        raw.append(Verdict(task, metric, card_value, ours, 100 * (ours - card_value), "vs card (our stderr only)", p,
                           detail=f"{ref.source}; tolerance {tolerance} points"))
    if not raw:
        raise GateInputError(f"the run has none of the metrics the card {card!r} reports")
    report = GateReport(notes=[f"against the published {card} numbers: only our standard errors are known"])
    for verdict, p_adj in zip(raw, stats.holm([v.p_value for v in raw])):
        outcome = "regressed" if p_adj < alpha and verdict.p_value < 1.0 else "pass"
        report.verdicts.append(Verdict(**{**asdict(verdict), "p_adjusted": p_adj, "verdict": outcome}))
    report.notes.append(f"Holm–Bonferroni correction over {len(raw)} metric(s); alpha {alpha}")
    return report
