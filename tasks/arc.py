"""ARC-Easy and ARC-Challenge (Clark et al., 2018), 0-shot, as in the Llama 2 card.

The test sets (2,376 Easy, 1,172 Challenge questions; 3-5 choices). The prompt is lm-eval's
("Question: {question}\\nAnswer:"); each choice's text is scored as a continuation. Labels are
"A".."E", except the New York Regents items, which use "1".."4"; the answer key is mapped to a
choice index whichever style a row uses. The card's number is ``acc_norm`` (per character).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalharness.core.task import register_task
from evalharness.data.datasets import Dataset, JsonLines, Record
from evalharness.shapes.multiple_choice import MultipleChoice, answer_index


def from_release(row: Record) -> Record:
    """An ARC release row (question.stem, question.choices[{text, label}]) in the hub's schema."""
    choices = row["question"]["choices"]
    return {
        "id": row.get("id", ""),
        "question": row["question"]["stem"],
        "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
        "answerKey": row["answerKey"],
    }


def release(subset: str) -> JsonLines:
    files = {split: f"arc/ARC-{subset}-{name}.jsonl" for split, name in
             (("test", "Test"), ("validation", "Dev"), ("train", "Train"))}
    return JsonLines(files, ("question", "answerKey"), to_record=from_release)


class ARC(MultipleChoice):
    version = "1.0"
    template = "arc/default.jinja"
    metrics = ("acc", "acc_norm")

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        texts, labels = list(record["choices"]["text"]), list(record["choices"]["label"])
        if len(texts) != len(labels) or len(texts) < 2:
            raise ValueError(f"{len(texts)} choice texts for {len(labels)} labels")
        return {"question": record["question"], "choices": texts, "answer": answer_index(labels, record["answerKey"])}


@register_task
class ArcEasy(ARC):
    name = "arc_easy"
    dataset = Dataset("allenai/ai2_arc", "ARC-Easy", "test", release("Easy"))


@register_task
class ArcChallenge(ARC):
    name = "arc_challenge"
    dataset = Dataset("allenai/ai2_arc", "ARC-Challenge", "test", release("Challenge"))
