"""Text-overlap metrics for generation tasks: ROUGE, BLEU-n and bootstrap confidence intervals.

- **ROUGE** is Google's ``rouge-score`` (the implementation behind HF ``evaluate``'s rouge):
  F-measure, Porter stemmer on, its default tokenizer (lowercase, every run of characters other
  than ``a-z0-9`` is a separator). Scores are per document and averaged over documents (the mean
  that ``rouge-score``'s ``BootstrapAggregator`` "mid" and ``evaluate`` approximate).
  ``rougeLsum`` needs one sentence per line: predictions and references are split at line breaks
  and after sentence-final punctuation followed by white space (a fixed regular expression, so no
  tokenizer data has to be downloaded; nltk's punkt would need one).
- **BLEU-n** is ``sacrebleu``'s BLEU: 13a tokenization, case-sensitive, ``smooth_method="none"``
  and ``max_ngram_order=n`` (BLEU-3: n-grams up to 3, uniform weights 1/3; BLEU-4: up to 4). It is
  **corpus-level**: n-gram matches, n-gram totals and lengths are summed over all documents
  before the precisions, geometric mean and brevity penalty are taken — what sacrebleu's
  ``corpus_score`` and HF ``evaluate``'s ``bleu`` (used by the Azure ML sample) both compute,
  with identical numbers for one reference per document. Unsmoothed sentence-level BLEU is 0
  for every document without a matching top-order n-gram, so its average would mostly measure
  how often that happens. Each document keeps its sufficient statistics (``BleuStats``), so the
  corpus score, and its bootstrap, can be recomputed from ``samples.jsonl``.
- **Bootstrap**: documents are resampled with replacement (1,000 resamples, numpy
  ``default_rng(seed)``, seed fixed by the run), and the interval is the 2.5th to 97.5th
  percentile of the resampled statistic.

A missing metric package is an ``EvalHarnessError`` naming the package, never a silent 0.0.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalharness.core.errors import EvalHarnessError

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
MAX_BLEU_ORDER = 4
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE_LEVEL = 0.95


def _missing(package: str, metric: str) -> EvalHarnessError:
    return EvalHarnessError(
        f"{metric} needs the {package!r} package, which is not installed"
        f" (pip install {package}; it is a dependency of evalharness)"
    )


def require_rouge() -> None:
    """Fail early, before a model loads, when rouge-score is missing."""
    _rouge_module()


def require_bleu() -> None:
    _bleu_class()


def _rouge_module() -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise _missing("rouge-score", "ROUGE") from None
    # rouge-score logs "Using default tokenizer." at INFO through absl on every scorer.
    logging.getLogger("absl").setLevel(logging.WARNING)
    return rouge_scorer


def _bleu_class() -> Any:
    try:
        from sacrebleu.metrics import BLEU
    except ImportError:
        raise _missing("sacrebleu", "BLEU") from None
    return BLEU


# --- ROUGE -------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"([.!?][\"')\]]*)\s+")


def sentences_per_line(text: str) -> str:
    """One sentence per line, for rougeLsum: split at line breaks and after ``.``/``!``/``?``
    (and any closing quote or bracket) followed by white space."""
    sentences: list[str] = []
    for line in text.splitlines():
        split = _SENTENCE_END.sub("\\1\n", line.strip())
        sentences.extend(s.strip() for s in split.split("\n") if s.strip())
    return "\n".join(sentences)


@functools.lru_cache(maxsize=8)
def _rouge_scorer(types: tuple[str, ...], use_stemmer: bool) -> Any:
    return _rouge_module().RougeScorer(list(types), use_stemmer=use_stemmer)


def rouge(
    prediction: str,
    reference: str,
    types: Sequence[str] = ROUGE_TYPES,
    use_stemmer: bool = True,
) -> dict[str, float]:
    """ROUGE F-measures of one prediction against one reference, as fractions."""
    types = tuple(types)
    scorer = _rouge_scorer(types, use_stemmer)
    if "rougeLsum" in types:
        prediction, reference = sentences_per_line(prediction), sentences_per_line(reference)
    # rouge-score's argument order is (target, prediction).
    scores = scorer.score(reference, prediction)
    return {name: float(scores[name].fmeasure) for name in types}


# --- BLEU --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BleuStats:
    """BLEU's sufficient statistics for one document: lengths and n-gram matches/totals."""

    sys_len: int
    ref_len: int
    correct: tuple[int, ...]  # matching n-grams of order 1..MAX_BLEU_ORDER
    total: tuple[int, ...]  # n-grams of order 1..MAX_BLEU_ORDER in the prediction

    def to_dict(self) -> dict[str, Any]:
        return {"sys_len": self.sys_len, "ref_len": self.ref_len,
                "correct": list(self.correct), "total": list(self.total)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BleuStats:
        return cls(int(data["sys_len"]), int(data["ref_len"]), tuple(data["correct"]), tuple(data["total"]))


@functools.lru_cache(maxsize=1)
def _bleu_metric() -> Any:
    return _bleu_class()(tokenize="13a", smooth_method="none", max_ngram_order=MAX_BLEU_ORDER)


def bleu_stats(prediction: str, reference: str) -> BleuStats:
    """The statistics of one (prediction, reference) pair under 13a tokenization."""
    score = _bleu_metric().corpus_score([prediction], [[reference]])
    return BleuStats(int(score.sys_len), int(score.ref_len), tuple(map(int, score.counts)),
                     tuple(map(int, score.totals)))


def corpus_bleu(stats: Sequence[BleuStats], order: int) -> float:
    """Corpus BLEU-``order`` (unsmoothed) from per-document statistics, as a fraction."""
    if not 1 <= order <= MAX_BLEU_ORDER:
        raise ValueError(f"BLEU order must be in 1..{MAX_BLEU_ORDER}")
    if not stats:
        return float("nan")
    correct = [sum(s.correct[i] for s in stats) for i in range(order)]
    total = [sum(s.total[i] for s in stats) for i in range(order)]
    sys_len = sum(s.sys_len for s in stats)
    ref_len = sum(s.ref_len for s in stats)
    score = _bleu_class().compute_bleu(
        correct, total, sys_len, ref_len, smooth_method="none", max_ngram_order=order
    )
    return score.score / 100.0


# --- bootstrap ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap confidence interval and the bootstrap standard deviation."""

    low: float
    high: float
    stderr: float
    level: float = CONFIDENCE_LEVEL
    resamples: int = BOOTSTRAP_RESAMPLES

    def to_dict(self) -> dict[str, float | int]:
        return {"low": self.low, "high": self.high, "level": self.level, "resamples": self.resamples}


def _resample_indices(n: int, seed: int, resamples: int) -> Any:
    import numpy as np

    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(draws: Any, level: float, resamples: int) -> Interval:
    import numpy as np

    draws = np.asarray(draws, dtype=float)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    stderr = float(draws.std(ddof=1)) if len(draws) > 1 else float("nan")
    return Interval(float(low), float(high), stderr, level, resamples)


def bootstrap_mean(
    values: Sequence[float], seed: int, resamples: int = BOOTSTRAP_RESAMPLES, level: float = CONFIDENCE_LEVEL
) -> Interval:
    """Bootstrap interval of the mean of per-document values."""
    import numpy as np

    if not values:
        return Interval(math.nan, math.nan, math.nan, level, resamples)
    array = np.asarray(values, dtype=float)
    indices = _resample_indices(len(array), seed, resamples)
    return _interval(array[indices].mean(axis=1), level, resamples)


def bootstrap_bleu(
    stats: Sequence[BleuStats],
    orders: Sequence[int],
    seed: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CONFIDENCE_LEVEL,
) -> dict[int, Interval]:
    """Bootstrap intervals of corpus BLEU-n for each n in ``orders``, from one set of resamples."""
    import numpy as np

    if not stats:
        return {n: Interval(math.nan, math.nan, math.nan, level, resamples) for n in orders}
    table = np.array([[s.sys_len, s.ref_len, *s.correct, *s.total] for s in stats], dtype=np.int64)
    sums = table[_resample_indices(len(stats), seed, resamples)].sum(axis=1)
    compute = _bleu_class().compute_bleu
    k = MAX_BLEU_ORDER
    out = {}
    for n in orders:
        draws = [
            compute(row[2 : 2 + n].tolist(), row[2 + k : 2 + k + n].tolist(), int(row[0]), int(row[1]),
                    smooth_method="none", max_ngram_order=n).score / 100.0
            for row in sums
        ]
        out[n] = _interval(draws, level, resamples)
    return out
