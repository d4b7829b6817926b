"""Social IQa (Sap et al., 2019), 0-shot, as in the Llama 2 card's Commonsense Reasoning group.

1,954 dev questions: a context, a question and three answers. The prompt is lm-eval's
``social_iqa`` ("Q: {context} {question}\\nA:"); each answer is scored as a continuation. The
labels are 1-based ("1" = answerA). The card's number is ``acc_norm`` (per character).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalharness.core.task import register_task
from evalharness.data.datasets import Dataset, JsonLines, LabelFile, Record
from evalharness.shapes.multiple_choice import MultipleChoice

FIELDS = ("context", "question", "answerA", "answerB", "answerC")


def with_label(row: Record) -> Record:
    """A release row and its .lst label in the hub's schema (the label a string "1"-"3")."""
    if row["label"] not in ("1", "2", "3"):
        raise ValueError(f"label {row['label']!r} is not 1, 2 or 3")
    return {**{field: row[field] for field in FIELDS}, "label": row["label"]}


RELEASE = JsonLines(
    {"validation": "siqa/dev.jsonl"}, FIELDS,
    labels=LabelFile({"validation": "siqa/dev-labels.lst"}, parse=str), to_record=with_label,
)


@register_task
class SocialIQA(MultipleChoice):
    name = "siqa"
    version = "1.0"
    template = "siqa/default.jinja"
    dataset = Dataset("allenai/social_i_qa", None, "validation", RELEASE)
    metrics = ("acc", "acc_norm")

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        answer = int(record["label"]) - 1
        if answer not in (0, 1, 2):
            raise ValueError(f"label {record['label']!r} is not 1, 2 or 3")
        choices = [record["answerA"], record["answerB"], record["answerC"]]
        return {"context": record["context"], "question": record["question"], "choices": choices, "answer": answer}
