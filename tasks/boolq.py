"""BoolQ (Clark et al., 2019), 0-shot, as the Llama 2 card's Reading Comprehension group uses it.

Each of the 3,270 validation questions is asked after its Wikipedia passage with lm-eval's prompt
("{passage}\\nQuestion: {question}?\\nAnswer:"); the model scores " no" and " yes" as continuations.
``acc_calibrated`` is the card's number: Llama 1 §3 scores BoolQ by
P(answer | prompt) / P(answer | "Answer:"), which removes the model's prior for " yes"; plain
``acc`` (the highest log-likelihood) is reported beside it. A long passage is cut from the left
when the prompt overflows the model's context; the question and "Answer:" are never cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.core.task import Doc, Prompt, register_task
from evalharness.data.datasets import Dataset, JsonLines
from evalharness.shapes.multiple_choice import MultipleChoice
from evalharness.shapes.summarisation import instruction_chars

CHOICES = ("no", "yes")


@register_task
class BoolQ(MultipleChoice):
    name = "boolq"
    version = "1.0"
    template = "boolq/default.jinja"
    dataset = Dataset(
        "google/boolq", None, "validation",
        JsonLines({"validation": "boolq/validation.jsonl"}, ("question", "answer", "passage")),
    )  # fmt: skip
    metrics = ("acc", "acc_calibrated")

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        if not isinstance(record["answer"], bool):
            raise ValueError(f"answer must be true or false, got {record['answer']!r}")
        if not isinstance(record["question"], str) or not isinstance(record["passage"], str):
            raise ValueError("question and passage must be strings")
        return {"question": record["question"], "passage": record["passage"], "answer": int(record["answer"])}

    def choices(self, doc: Doc) -> Sequence[str]:
        return CHOICES  # " no" / " yes" after "Answer:"; the gold index is the answer (True = 1)

    def protected_chars(self, doc: Doc, prompt: Prompt) -> int:
        return instruction_chars(prompt, str(doc.fields["passage"]))
