"""Means with standard errors, and the ways the card averages them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricValue:
    value: float
    stderr: float
    n: int
    ci: tuple[float, float] | None = None  # a confidence interval, where the task computes one

    def to_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"value": self.value, "stderr": self.stderr, "n": self.n}
        if self.ci is not None:
            out["ci_low"], out["ci_high"] = self.ci
        return out


def mean_with_stderr(values: Sequence[float]) -> MetricValue:
    """Sample mean and its standard error (sample std with ddof=1, over sqrt(n))."""
    n = len(values)
    if n == 0:
        return MetricValue(float("nan"), float("nan"), 0)
    mean = math.fsum(values) / n
    if n == 1:
        return MetricValue(mean, float("nan"), 1)
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return MetricValue(mean, math.sqrt(variance / n), n)


def mean_of_means(parts: Iterable[MetricValue]) -> MetricValue:
    """Unweighted mean of group means (macro); its stderr treats groups as independent."""
    parts = list(parts)
    if not parts:
        return MetricValue(float("nan"), float("nan"), 0)
    k = len(parts)
    value = math.fsum(p.value for p in parts) / k
    stderr = math.sqrt(math.fsum(p.stderr**2 for p in parts if not math.isnan(p.stderr))) / k
    return MetricValue(value, stderr, sum(p.n for p in parts))


def per_document_metrics(
    outcomes: Iterable[Mapping[str, float]],
) -> dict[str, MetricValue]:
    """Mean ± stderr of every per-document metric, in first-seen order."""
    columns: dict[str, list[float]] = {}
    for metrics in outcomes:
        for name, value in metrics.items():
            columns.setdefault(name, []).append(float(value))
    return {name: mean_with_stderr(values) for name, values in columns.items()}


@dataclass(frozen=True)
class GroupMeans:
    """One per-document metric averaged per group, over the groups, and over every document."""

    groups: dict[str, MetricValue]
    mean_of_groups: MetricValue  # unweighted: each group counts once, whatever its size
    pooled: MetricValue


def group_means(values: Mapping[str, Sequence[float]]) -> GroupMeans:
    """``values``: each group's per-document values, in the order the groups are reported."""
    groups = {key: mean_with_stderr(group) for key, group in values.items()}
    pooled = mean_with_stderr([v for group in values.values() for v in group])
    return GroupMeans(groups, mean_of_means(groups.values()), pooled)
