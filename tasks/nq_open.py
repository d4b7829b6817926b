"""NaturalQuestions-open (Lee et al., 2019), 5-shot, the card's World Knowledge member (exact match).

The 3,610 questions of NQ-open's dev set (the standard open-domain test set). The Llama papers'
prompt: "Answer these questions:" on one line, then five answered "Q: …?\\nA: …" pairs and the test
question, one line each (NQ questions have no "?"; it is added, as in the papers' example and
lm-eval). Greedy, stop at a newline, 32 new tokens; the prediction is the first line, and it scores
1 when it equals any of the reference answers after SQuAD normalisation (case, punctuation,
articles, whitespace).

Few-shot examples: the first five questions of the train pool, the same for every question
(``first_n``, recorded in results.json). Offline the pool is DPR's 8,757-question held-out part of
NQ-open train (nq_open/NQ-open.train.dpr-dev-subset.jsonl; the full train file is not available),
online the hub's train split, so the two ways pick different examples. The answer shown is the
first reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.core.task import Doc, register_task
from evalharness.data.datasets import Dataset, Fewshot, JsonLines
from evalharness.shapes.short_answer import ClosedBookQA

DEV = Dataset("google-research-datasets/nq_open", "nq_open", "validation",
              JsonLines({"validation": "nq_open/NQ-open.dev.jsonl"}, ("question", "answer")))
TRAIN = Dataset("google-research-datasets/nq_open", "nq_open", "train",
                JsonLines({"train": "nq_open/NQ-open.train.dpr-dev-subset.jsonl"}, ("question", "answer")))


@register_task
class NaturalQuestionsOpen(ClosedBookQA):
    name = "nq_open"
    version = "1.0"
    template = "nq_open/qa.jinja"
    dataset = DEV
    fewshot = Fewshot("train", "first_n", TRAIN, note="offline: the first 5 of DPR's held-out NQ-open train"
                                                      " questions; online: the hub's train split")

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        answers = record["answer"]
        if not isinstance(record["question"], str) or not isinstance(answers, list) or not answers:
            raise ValueError("expected a question and a non-empty list of answers")
        return {"question": record["question"], "answers": [str(a) for a in answers]}

    def references(self, doc: Doc) -> Sequence[str]:
        return list(doc.fields["answers"])
