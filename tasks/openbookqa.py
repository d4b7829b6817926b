"""OpenBookQA (Mihaylov et al., 2018), 0-shot, as in the Llama 2 card's Commonsense Reasoning group.

500 "Main" test questions with four choices. The prompt is lm-eval's (the question stem alone);
each choice is scored as a continuation. The card's number is ``acc_calibrated``, the Llama 1
paper's rule for OBQA: P(choice | question) / P(choice | "Answer:"), i.e. the log-likelihood
minus the choice's log-likelihood after "Answer:".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from evalharness.core.task import register_task
from evalharness.data.datasets import Dataset, Record, TsvRows
from evalharness.shapes.multiple_choice import MultipleChoice, answer_index

CHOICE = re.compile(r"(?:^|\s)\(([A-Z])\)\s")


def from_release(row: Record) -> Record:
    """A release TSV row (Choices: "(A) … (B) … (C) … (D) …") in the hub's schema."""
    parts = CHOICE.split(row["Choices"].strip())
    labels, texts = parts[1::2], [text.strip() for text in parts[2::2]]
    if parts[0].strip() or labels != ["A", "B", "C", "D"][: len(labels)] or len(labels) < 2:
        raise ValueError(f"cannot read the choices {row['Choices']!r}")
    return {
        "id": row["ID"],
        "question_stem": row["Question Stem"],
        "choices": {"text": texts, "label": labels},
        "answerKey": row["Answer Key"],
    }


@register_task
class OpenBookQA(MultipleChoice):
    name = "openbookqa"
    version = "1.0"
    template = "openbookqa/default.jinja"
    dataset = Dataset(
        "allenai/openbookqa", "main", "test",
        TsvRows({"test": "openbookqa/test.tsv", "validation": "openbookqa/dev.tsv"}, to_record=from_release),
    )
    metrics = ("acc", "acc_norm", "acc_calibrated")

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        labels = list(record["choices"]["label"])
        return {
            "question_stem": record["question_stem"],
            "choices": list(record["choices"]["text"]),
            "answer": answer_index(labels, record["answerKey"]),
        }
