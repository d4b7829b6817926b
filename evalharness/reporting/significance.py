"""Significance tests for regression gates: exact McNemar, paired bootstrap, z-test, Holm."""

from __future__ import annotations

import math
from collections.abc import Sequence


def binomial_cdf(k: int, n: int, p: float = 0.5) -> float:
    """P(X <= k) for X ~ Binomial(n, p), exactly (math.comb), fine for n up to tens of thousands."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    # Sum in log space to stay finite for large n.
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
            + (n - i) * math.log1p(-p) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(x - top) for x in logs))


def mcnemar_exact(base: Sequence[float], candidate: Sequence[float]) -> tuple[int, int, float]:
    """Two-sided exact McNemar test on paired 0/1 outcomes.

    Returns (b, c, p): b = right in the baseline only, c = right in the candidate only.
    """
    b = sum(1 for x, y in zip(base, candidate, strict=True) if x and not y)
    c = sum(1 for x, y in zip(base, candidate, strict=True) if y and not x)
    n = b + c
    p = 1.0 if n == 0 else min(1.0, 2.0 * binomial_cdf(min(b, c), n))
    return b, c, p


def paired_bootstrap(
    base: Sequence[float], candidate: Sequence[float], iterations: int = 10_000, seed: int = 0
) -> float:
    """Two-sided p-value for mean(candidate - base) == 0, by resampling centred differences."""
    import numpy as np

    diffs = np.asarray(candidate, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    n = len(diffs)
    if n == 0:
        return 1.0
    observed = float(diffs.mean())
    centred = diffs - observed
    rng = np.random.default_rng(seed)
    extreme = 0
    chunk = max(1, 2_000_000 // n)  # bounded memory whatever the sample size
    for start in range(0, iterations, chunk):
        size = min(chunk, iterations - start)
        means = centred[rng.integers(0, n, size=(size, n))].mean(axis=1)
        extreme += int((np.abs(means) >= abs(observed) - 1e-15).sum())
    return (extreme + 1) / (iterations + 1)


def normal_two_sided(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def z_test(base: float, base_se: float, candidate: float, candidate_se: float) -> float:
    """Two-sided p-value for a difference of two independent means given their standard errors."""
    se = math.sqrt((base_se or 0.0) ** 2 + (candidate_se or 0.0) ** 2)
    if se == 0:
        return 0.0 if candidate != base else 1.0
    return normal_two_sided((candidate - base) / se)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (family-wise error control, uniformly stronger than Bonferroni)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
