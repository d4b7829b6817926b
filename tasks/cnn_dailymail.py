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
Long articles lose their beginning, never the instruction (``evalharness.shapes.summarisation``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from evalharness.core.task import Doc, TaskResult, register_task
from evalharness.data.datasets import Dataset, JsonLines
from evalharness.data.source import DataSource
from evalharness.shapes.summarisation import ReferenceOverlap

log = logging.getLogger(__name__)

# The local file holds the first 500 test rows, in the hub's order and schema.
TEST = Dataset("abisee/cnn_dailymail", "3.0.0", "test",
               JsonLines("cnn_dailymail/test_first500.jsonl", ("id", "article", "highlights")))


def article_record(record: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(record["article"], str) or not record["article"].strip():
        raise ValueError("empty article")
    return {"id": record["id"], "article": record["article"], "highlights": record["highlights"]}


@register_task
class CNNDailyMail(ReferenceOverlap):
    name = "cnn_dailymail"
    version = "1.0"
    template = "cnn_dailymail/summarize_helm.jinja"
    dataset = TEST
    source_field = "article"
    reference_field = "highlights"
    variants = {"helm": "cnn_dailymail/summarize_helm.jinja", "tldr": "cnn_dailymail/summarize_tldr.jinja"}

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        return article_record(record)


@register_task
class CNNDailyMailTextGen(ReferenceOverlap):
    name = "cnn_dailymail_textgen"
    version = "1.0"
    template = "cnn_dailymail/textgen.jinja"
    dataset = TEST
    source_field = "article_prefix"
    reference_field = "article"  # the whole article, as the sample does
    rouge_types = ("rouge1", "rouge2")
    bleu_orders = (3, 4)
    stop = ()
    defaults = {"max_new_tokens": 100}
    SAMPLE_SIZE: ClassVar[int] = 1000  # the sample's streaming .take(1000)
    INPUT_CHARS: ClassVar[int] = 100  # article[:100]

    def documents(self, data: DataSource, subtask: str) -> list[Doc]:
        docs = super().documents(data, subtask)[: self.SAMPLE_SIZE]
        if len(docs) < self.SAMPLE_SIZE:
            log.warning(
                "%s: the data has %d of the sample's first %d test articles; scoring those",
                self.name, len(docs), self.SAMPLE_SIZE,
            )
        return docs

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        return {key: article_record(record)[key] for key in ("id", "article")}

    def template_vars(self, doc: Doc) -> Mapping[str, Any]:
        return {"article_prefix": doc.fields["article"][: self.INPUT_CHARS]}

    def protected_chars(self, doc: Doc, prompt: Any) -> int:
        return int(prompt.document_chars)

    def aggregate(self, outcomes: Mapping[str, Any]) -> TaskResult:
        result = super().aggregate(outcomes)
        scored = result.details["documents_scored"]
        return TaskResult(result.metrics, details={"protocol": {**self.protocol(), "documents_available": scored}})

    def protocol(self) -> dict[str, Any]:
        return {
            "source": "Azure ML evaluate-model-text-generation sample (PROTOCOL.md section 9)",
            "documents": self.SAMPLE_SIZE,
            "documents_available": None,
            "input": f"article[:{self.INPUT_CHARS}], no instruction",
            "reference": "the full article (not the highlights)",
        }

    def config(self) -> dict[str, Any]:
        return {**super().config(), "protocol": self.protocol()}
