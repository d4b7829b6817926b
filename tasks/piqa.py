"""PIQA (Bisk et al., 2020), 0-shot, as in the Llama 2 card's Commonsense Reasoning group.

1,838 validation questions (the test labels are hidden): a goal and two solutions. The prompt is
lm-eval's ("Question: {goal}\\nAnswer:"); each solution is scored as a continuation. The card's
number is ``acc_norm`` (log-likelihood per character, the Llama papers' rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalharness.core.task import register_task
from evalharness.data.datasets import Dataset, JsonLines, LabelFile, Record
from evalharness.shapes.multiple_choice import MultipleChoice


def with_label(row: Record) -> Record:
    """A release row and its .lst label (0: sol1, 1: sol2) in the hub's schema."""
    if row["label"] not in (0, 1):
        raise ValueError(f"label {row['label']} is not 0 or 1")
    return {"goal": row["goal"], "sol1": row["sol1"], "sol2": row["sol2"], "label": row["label"]}


RELEASE = JsonLines(
    {"validation": "piqa/dev.jsonl"}, ("goal", "sol1", "sol2"),
    labels=LabelFile({"validation": "piqa/dev-labels.lst"}), to_record=with_label,
)


@register_task
class PIQA(MultipleChoice):
    name = "piqa"
    version = "1.0"
    template = "piqa/default.jinja"
    dataset = Dataset("baber/piqa", None, "validation", RELEASE)  # ybisk/piqa's loading script no longer runs
    metrics = ("acc", "acc_norm")

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"goal": record["goal"], "choices": [record["sol1"], record["sol2"]], "answer": int(record["label"])}
