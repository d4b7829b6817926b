"""HellaSwag (Zellers et al., 2019), 0-shot, as in the Llama 2 card's Commonsense Reasoning group.

10,042 validation contexts, each with four endings. The context and endings get lm-eval's
preprocessing (WikiHow's " [title]" becomes ". ", other bracketed markers such as "[header]" are
removed, double spaces collapse), the prompt is "{activity_label}: {ctx_a} {Ctx_b}", and each
ending is scored as a continuation. The card's number is ``acc_norm`` (per character).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from evalharness.core.task import register_task
from evalharness.data.datasets import Dataset, JsonLines, Record
from evalharness.shapes.multiple_choice import MultipleChoice


def preprocess(text: str) -> str:
    """lm-eval's hellaswag ``preprocess``, step for step."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def checked(row: Record) -> Record:
    """A row in the hub's schema with four string endings and a label "0"-"3"."""
    endings = row["endings"]
    if not isinstance(endings, list) or len(endings) != 4 or not all(isinstance(e, str) for e in endings):
        raise ValueError(f"expected 4 endings, got {len(endings) if isinstance(endings, list) else endings!r}")
    if str(row["label"]) not in ("0", "1", "2", "3"):
        raise ValueError(f"label {row['label']!r} is not 0-3")
    return row


REQUIRED = ("activity_label", "ctx_a", "ctx_b", "endings", "label")


@register_task
class HellaSwag(MultipleChoice):
    name = "hellaswag"
    version = "1.0"
    template = "hellaswag/default.jinja"
    dataset = Dataset(
        "Rowan/hellaswag", None, "validation",
        JsonLines({"validation": "hellaswag/validation.jsonl.gz"}, REQUIRED, to_record=checked),
    )
    metrics = ("acc", "acc_norm")

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        row = checked(dict(record))  # hub rows too
        context = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        return {
            "query": preprocess(row["activity_label"] + ": " + context),
            "choices": [preprocess(ending) for ending in row["endings"]],
            "answer": int(row["label"]),
        }
