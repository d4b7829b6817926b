"""CNN / Daily Mail 3.0.0 (Hermann et al., 2015; See et al., 2017), test split: two tasks.

``cnn_dailymail_textgen`` is the Azure ML "evaluate-model-text-generation" sample that the
Llama 2 model card links to (PROTOCOL.md §9), faithfully: the first 1,000 test articles, the
input is the first 100 *characters* of the article with no instruction, and the reference is the
**whole article** — not the highlights. So it measures how much of the article a continuation of
its opening reproduces; it is not summarisation, and ROUGE/BLEU against a ~700-word reference
stay small for any model. Metrics as in the sample: ROUGE-1 and ROUGE-2 (F-measure, stemmer
on) and corpus BLEU-3 and BLEU-4 (no smoothing); see ``evalharness.scoring.text_overlap``. The sample
sets no decoding parameters: we decode greedily, 100 new tokens, no stop string (recorded in
results.json). The prediction is the generated continuation alone, without the 100 input
characters. The local data holds the first 500 test rows only (../shared/data/cnn_dailymail
SOURCE.md); the full 1,000 load by hub id.

``cnn_dailymail`` is real summarisation against the highlights, zero-shot: the article, then an
instruction. Default: HELM's "###\\nArticle: {article}\\n\\nSummarize the above article in 3
sentences.\\n", stopping at "###"; ``--task-args template=tldr`` selects GPT-2's
"{article}\\nTL;DR:". Greedy, 128 new tokens. ROUGE-1/2/L/Lsum F-measures (rouge-score, Porter
stemmer) averaged over documents, with 95% bootstrap intervals in results.json
(``ci_low``/``ci_high`` beside each metric; settings in ``tasks.<name>.confidence_intervals``).

Long articles: the backend cuts an overflowing prompt from the left, token-wise, after BOS. The
instruction after the article is the request's protected tail, so the cut falls in the article
(its beginning is dropped) and never in the instruction; ``truncated_documents`` in results.json
counts the articles cut, and ``truncated_into_document`` (instruction cut) stays 0 unless the
model's window cannot even hold the instruction.
"""

from __future__ import annotations

import dataclasses

import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from evalharness.scoring import text_overlap as text_metrics
from evalharness.data.source import DataSource
from evalharness.core.errors import DataError, UnknownNameError
from evalharness.core.averages import MetricValue, mean_with_stderr
from evalharness.core.registry import did_you_mean
from evalharness.core.requests import GenerateRequest, GenerateResponse, Response, SamplingParams
from evalharness.core.task import Aggregate, Doc, Outcome, Prompt, Task, register_task

log = logging.getLogger(__name__)

HUB_ID, HUB_CONFIG = "abisee/cnn_dailymail", "3.0.0"
LOCAL_FILE = ("cnn_dailymail", "test_first500.jsonl")
BOOTSTRAP_SEED = 1234  # fixed: confidence intervals do not move with --seed


def instruction_chars(prompt: Prompt, source: str) -> int:
    """Length of the prompt's tail after the last verbatim copy of ``source`` (the instruction).

    A user template that does not contain the source text verbatim protects the whole rendered
    document instead, so any cut is then reported as ``truncated_into_document``.
    """
    end = prompt.text.rfind(source) if source else -1
    if end < 0:
        return prompt.document_chars
    return len(prompt.text) - (end + len(source))


def _with_ci(value: MetricValue, interval: text_metrics.Interval) -> MetricValue:
    return dataclasses.replace(value, ci=(interval.low, interval.high))


CI_SETTINGS = {
    "method": "percentile bootstrap over documents",
    "level": text_metrics.CONFIDENCE_LEVEL,
    "resamples": text_metrics.BOOTSTRAP_RESAMPLES,
    "seed": BOOTSTRAP_SEED,
}


def _generated(responses: Sequence[Response]) -> GenerateResponse:
    (response,) = [r for r in responses if isinstance(r, GenerateResponse)]
    return response


def _outcome(
    response: GenerateResponse, prediction: str, reference: str, metrics: dict[str, float], **extra: Any
) -> Outcome:
    """A generation scored against its reference; the raw text and how it ended are logged."""
    return Outcome(
        output=response.text,
        prediction=prediction,
        gold=reference,
        metrics=metrics,
        extra={**extra, "finish_reason": response.finish_reason, "num_tokens": response.num_tokens},
    )


def load_cnn_dailymail(data: DataSource, limit: int | None = None) -> list[dict[str, Any]]:
    """Test rows in HF order: the local first-500 file, or the hub split."""
    if data.is_local:
        rows = data.read_jsonl(*LOCAL_FILE, required=("id", "article", "highlights"))
    else:
        rows = list(itertools.islice(data.hub(HUB_ID, HUB_CONFIG, "test"), limit))
    for i, row in enumerate(rows):
        if not isinstance(row["article"], str) or not row["article"].strip():
            raise DataError(f"cnn_dailymail test row {i + 1}: empty article")
    return rows[:limit]


class SummarizationTask(Task):
    """Zero-shot summarisation: source text, then an instruction; ROUGE against a reference."""

    source_field: ClassVar[str]
    reference_field: ClassVar[str]
    variants: ClassVar[Mapping[str, str]]  # --task-args template=<name> → template path
    stop: ClassVar[tuple[str, ...]] = ("###",)
    defaults: ClassVar[Mapping[str, Any]] = {"template": "helm", "max_new_tokens": 128}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        variant = str(self.options["template"])
        if variant not in self.variants:
            raise UnknownNameError(
                f"{self.name}: unknown template {variant!r}"
                f"{did_you_mean(variant, sorted(self.variants))} (choose from {', '.join(self.variants)})"
            )
        self.template = self.variants[variant]

    def check_metrics(self) -> None:
        text_metrics.require_rouge()  # before the model loads

    def target(self, doc: Doc) -> str:
        return doc.fields[self.reference_field]

    def requests(self, doc: Doc, prompt: Prompt) -> list[GenerateRequest]:
        source = self.template_vars(doc)[self.source_field]
        sampling = SamplingParams(max_new_tokens=int(self.options["max_new_tokens"]))
        return [GenerateRequest(prompt.text, self.stop, sampling, instruction_chars(prompt, source))]

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        response = _generated(responses)
        prediction, reference = response.text.strip(), self.target(doc)
        return _outcome(response, prediction, reference, text_metrics.rouge(prediction, reference))

    def aggregate(self, outcomes: Mapping[str, Sequence[Outcome]]) -> Aggregate:
        docs = [o for group in outcomes.values() for o in group]
        metrics: dict[str, MetricValue] = {}
        for name in text_metrics.ROUGE_TYPES:
            values = [float(o.metrics[name]) for o in docs]
            metrics[name] = _with_ci(mean_with_stderr(values), text_metrics.bootstrap_mean(values, BOOTSTRAP_SEED))
        return Aggregate(metrics)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "decoding": {"greedy": True, "max_new_tokens": int(self.options["max_new_tokens"]),
                         "stop": list(self.stop)},
            "metric_settings": {"rouge": "rouge-score F-measure, Porter stemmer, mean over documents"},
            "confidence_intervals": CI_SETTINGS,
        }


@register_task
class CNNDailyMail(SummarizationTask):
    name = "cnn_dailymail"
    version = "1.0"
    template = "cnn_dailymail/summarize_helm.jinja"
    source_field = "article"
    reference_field = "highlights"
    variants = {"helm": "cnn_dailymail/summarize_helm.jinja", "tldr": "cnn_dailymail/summarize_tldr.jinja"}

    def documents(self, data: DataSource, subtask: str) -> list[Doc]:
        self.check_metrics()
        rows = load_cnn_dailymail(data)
        return [
            Doc(subtask, i, {"id": r["id"], "article": r["article"], "highlights": r["highlights"]})
            for i, r in enumerate(rows)
        ]


@register_task
class CNNDailyMailTextGen(Task):
    name = "cnn_dailymail_textgen"
    version = "1.0"
    template = "cnn_dailymail/textgen.jinja"
    defaults = {"max_new_tokens": 100}
    SAMPLE_SIZE: ClassVar[int] = 1000  # the sample's streaming .take(1000)
    INPUT_CHARS: ClassVar[int] = 100  # article[:100]
    BLEU_ORDERS: ClassVar[tuple[int, ...]] = (3, 4)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._available: int | None = None

    def documents(self, data: DataSource, subtask: str) -> list[Doc]:
        text_metrics.require_rouge()
        text_metrics.require_bleu()
        rows = load_cnn_dailymail(data, self.SAMPLE_SIZE)
        self._available = len(rows)
        if len(rows) < self.SAMPLE_SIZE:
            log.warning(
                "%s: the data has %d of the sample's first %d test articles; scoring those",
                self.name, len(rows), self.SAMPLE_SIZE,
            )
        return [Doc(subtask, i, {"id": r["id"], "article": r["article"]}) for i, r in enumerate(rows)]

    def template_vars(self, doc: Doc) -> Mapping[str, Any]:
        return {"article_prefix": doc.fields["article"][: self.INPUT_CHARS]}

    def target(self, doc: Doc) -> str:
        return doc.fields["article"]  # the whole article, as the sample does

    def requests(self, doc: Doc, prompt: Prompt) -> list[GenerateRequest]:
        sampling = SamplingParams(max_new_tokens=int(self.options["max_new_tokens"]))
        return [GenerateRequest(prompt.text, (), sampling, prompt.document_chars)]

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        response = _generated(responses)
        prediction, reference = response.text.strip(), self.target(doc)
        return _outcome(
            response, prediction, reference,
            text_metrics.rouge(prediction, reference, types=("rouge1", "rouge2")),
            bleu_stats=text_metrics.bleu_stats(prediction, reference).to_dict(),
        )

    def aggregate(self, outcomes: Mapping[str, Sequence[Outcome]]) -> Aggregate:
        docs = [o for group in outcomes.values() for o in group]
        metrics: dict[str, MetricValue] = {}
        for name in ("rouge1", "rouge2"):
            values = [float(o.metrics[name]) for o in docs]
            metrics[name] = _with_ci(mean_with_stderr(values), text_metrics.bootstrap_mean(values, BOOTSTRAP_SEED))
        stats = [text_metrics.BleuStats.from_dict(o.extra["bleu_stats"]) for o in docs]
        bleu_intervals = text_metrics.bootstrap_bleu(stats, self.BLEU_ORDERS, BOOTSTRAP_SEED)
        for order in self.BLEU_ORDERS:
            # Corpus-level: one number for the set; its stderr is the bootstrap's.
            name = f"bleu_{order}"
            interval = bleu_intervals[order]
            metrics[name] = MetricValue(
                text_metrics.corpus_bleu(stats, order), interval.stderr, len(stats), (interval.low, interval.high)
            )
        return Aggregate(metrics)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "protocol": {
                "source": "Azure ML evaluate-model-text-generation sample (PROTOCOL.md section 9)",
                "documents": self.SAMPLE_SIZE,
                "documents_available": self._available,
                "input": f"article[:{self.INPUT_CHARS}], no instruction",
                "reference": "the full article (not the highlights)",
            },
            "decoding": {"greedy": True, "max_new_tokens": int(self.options["max_new_tokens"]), "stop": []},
            "metric_settings": {
                "rouge": "rouge-score F-measure, Porter stemmer, mean over documents",
                "bleu": "sacrebleu corpus BLEU, 13a tokenizer, smooth_method=none, max_ngram_order=3/4",
            },
            "confidence_intervals": CI_SETTINGS,
        }
