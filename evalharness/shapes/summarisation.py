"""Generation scored by text overlap with a reference: summarisation and continuation.

Zero-shot: the source text, then (for summarisation) an instruction. The prediction is the
generation stripped; per-document ROUGE F-measures (rouge-score, Porter stemmer) are averaged
over documents, and corpus BLEU-n (sacrebleu) is pooled from per-document statistics. Every
metric carries a 95% percentile-bootstrap interval (``ci_low``/``ci_high``) with a fixed seed,
so intervals do not move with --seed. A task picks its ``rouge_types`` and ``bleu_orders``.

Long sources: the backend cuts an overflowing prompt from the left; the request's protected
tail is the instruction after the last verbatim copy of the source, so the cut falls in the
source (its beginning is dropped) and never in the instruction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from evalharness.core.averages import MetricValue, mean_with_stderr
from evalharness.core.errors import UnknownNameError
from evalharness.core.registry import did_you_mean
from evalharness.core.requests import Response
from evalharness.core.task import Doc, Outcome, Prompt, TaskResult
from evalharness.data.source import DataSource
from evalharness.scoring import text_overlap
from evalharness.shapes.generating import GeneratingTask, generations

BOOTSTRAP_SEED = 1234  # fixed: confidence intervals do not move with --seed
CI_SETTINGS = {
    "method": "percentile bootstrap over documents",
    "level": text_overlap.CONFIDENCE_LEVEL,
    "resamples": text_overlap.BOOTSTRAP_RESAMPLES,
    "seed": BOOTSTRAP_SEED,
}
ROUGE_SETTINGS = "rouge-score F-measure, Porter stemmer, mean over documents"
BLEU_SETTINGS = "sacrebleu corpus BLEU, 13a tokenizer, smooth_method=none, max_ngram_order=3/4"


def instruction_chars(prompt: Prompt, source: str) -> int:
    """Length of the prompt's tail after the last verbatim copy of ``source`` (the instruction).

    A user template that does not contain the source text verbatim protects the whole rendered
    document instead, so any cut is then reported as ``truncated_into_document``.
    """
    end = prompt.text.rfind(source) if source else -1
    if end < 0:
        return prompt.document_chars
    return len(prompt.text) - (end + len(source))


def _with_ci(value: MetricValue, interval: text_overlap.Interval) -> MetricValue:
    return dataclasses.replace(value, ci=(interval.low, interval.high))


class ReferenceOverlap(GeneratingTask):
    """Declare ``source_field`` (what the prompt shows), ``reference_field`` (what the output is
    compared with), ``variants`` (--task-args template=<name> → template path), the metrics."""

    source_field: ClassVar[str]
    reference_field: ClassVar[str]
    variants: ClassVar[Mapping[str, str]] = {}
    rouge_types: ClassVar[tuple[str, ...]] = text_overlap.ROUGE_TYPES
    bleu_orders: ClassVar[tuple[int, ...]] = ()
    stop: ClassVar[tuple[str, ...]] = ("###",)
    defaults: ClassVar[Mapping[str, Any]] = {"template": "helm", "max_new_tokens": 128}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.variants:
            variant = str(self.options["template"])
            if variant not in self.variants:
                raise UnknownNameError(
                    f"{self.name}: unknown template {variant!r}"
                    f"{did_you_mean(variant, sorted(self.variants))} (choose from {', '.join(self.variants)})"
                )
            self.template = self.variants[variant]

    def preflight(self, data: DataSource) -> None:
        text_overlap.require_rouge()  # a missing metric package fails before the model loads
        if self.bleu_orders:
            text_overlap.require_bleu()

    def target(self, doc: Doc) -> str:
        return str(doc.fields[self.reference_field])

    def protected_chars(self, doc: Doc, prompt: Prompt) -> int:
        return instruction_chars(prompt, str(self.template_vars(doc)[self.source_field]))

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        (response,) = generations(responses)
        prediction, reference = response.text.strip(), self.target(doc)
        extra: dict[str, Any] = {}
        if self.bleu_orders:
            extra["bleu_stats"] = text_overlap.bleu_stats(prediction, reference).to_dict()
        return Outcome(
            output=response.text,
            prediction=prediction,
            gold=reference,
            metrics=text_overlap.rouge(prediction, reference, types=self.rouge_types),
            extra={**extra, "finish_reason": response.finish_reason, "num_tokens": response.num_tokens},
        )

    def aggregate(self, outcomes: Mapping[str, Sequence[Outcome]]) -> TaskResult:
        docs = [o for group in outcomes.values() for o in group]
        metrics: dict[str, MetricValue] = {}
        for name in self.rouge_types:
            values = [float(o.metrics[name]) for o in docs]
            interval = text_overlap.bootstrap_mean(values, BOOTSTRAP_SEED)
            metrics[name] = _with_ci(mean_with_stderr(values), interval)
        if self.bleu_orders:
            stats = [text_overlap.BleuStats.from_dict(o.extra["bleu_stats"]) for o in docs]
            intervals = text_overlap.bootstrap_bleu(stats, self.bleu_orders, BOOTSTRAP_SEED)
            for order in self.bleu_orders:
                # Corpus-level: one number for the set; its stderr is the bootstrap's.
                interval = intervals[order]
                metrics[f"bleu_{order}"] = MetricValue(
                    text_overlap.corpus_bleu(stats, order), interval.stderr, len(stats), (interval.low, interval.high)
                )
        return TaskResult(metrics, details={"documents_scored": len(docs)})

    def config(self) -> dict[str, Any]:
        settings = {"rouge": ROUGE_SETTINGS, **({"bleu": BLEU_SETTINGS} if self.bleu_orders else {})}
        return {
            **super().config(),
            "decoding": self.decoding(),
            "metric_settings": settings,
            "confidence_intervals": CI_SETTINGS,
        }
