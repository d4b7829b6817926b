"""CommonsenseQA (Talmor et al., 2019), 7-shot, as in the Llama 2 card's Commonsense Reasoning group.

1,221 validation questions (the test labels are hidden) with five choices. The prompt is
lm-eval's ``commonsense_qa`` ("Question: …\\nA. …\\n…\\nE. …\\nAnswer:") and the model scores the
letters " A" … " E" after "Answer:". The paper does not publish its seven shots, so every run is
an approximation (recorded in results.json). With --data-dir the shots are the seven CSQA
exemplars of Wei et al. (2022), answers only, the same for every question (the local data has no
train split); from the hub, seven train questions drawn per question, seeded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.core.errors import EvalHarnessError
from evalharness.core.task import Doc, register_task
from evalharness.data.datasets import Dataset, Fewshot, JsonLines, Record
from evalharness.data.source import DataSource
from evalharness.shapes.multiple_choice import MultipleChoice, answer_index


def from_release(row: Record) -> Record:
    """A release row (question.stem, question.choices[{label, text}]) in the hub's schema."""
    question = row["question"]
    return {
        "id": row.get("id", ""),
        "question": question["stem"],
        "question_concept": question.get("question_concept", ""),
        "choices": {
            "label": [c["label"] for c in question["choices"]],
            "text": [c["text"] for c in question["choices"]],
        },
        "answerKey": row["answerKey"],
    }


EXEMPLARS = Dataset(
    "commonsense-qa-cot-exemplars", None, "exemplars",
    JsonLines("commonsenseqa/cot_7shot_exemplars.jsonl", ("question", "choices", "answerKey")),
    offline_hint="Wei et al.'s exemplars are read from commonsenseqa/cot_7shot_exemplars.jsonl",
)
APPROXIMATION = (
    "the paper's 7 shots are undisclosed: Wei et al.'s 7 CSQA exemplars, answers only (local data),"
    " or 7 seeded train questions (hub)"
)


@register_task
class CommonsenseQA(MultipleChoice):
    name = "commonsense_qa"
    version = "1.0"
    template = "commonsense_qa/default.jinja"
    dataset = Dataset(
        "tau/commonsense_qa", None, "validation",
        JsonLines(
            {"validation": "commonsenseqa/dev_rand_split.jsonl"}, ("question", "answerKey"), to_record=from_release
        ),
    )
    fewshot = Fewshot("train", "seeded")  # from the hub; with local data, EXEMPLARS first_n (fewshot_pool)
    default_fewshot = 7
    metrics = ("acc", "acc_norm")  # letters: acc_norm (per character) equals acc
    labelled_output = True

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        labels, texts = list(record["choices"]["label"]), list(record["choices"]["text"])
        if len(labels) != len(texts) or len(labels) < 2:
            raise ValueError(f"{len(texts)} choice texts for {len(labels)} labels")
        return {
            "question": record["question"].strip(),
            "options": list(zip(labels, texts, strict=True)),
            "labels": labels,
            "answer": answer_index(labels, record["answerKey"]),
            "exemplar": "rationale" in record,
        }

    def choices(self, doc: Doc) -> Sequence[str]:
        return list(doc.fields["labels"])  # the model scores " A" … " E"

    def fewshot_pool(self, data: DataSource, subtask: str) -> list[Doc]:
        if not data.is_local:
            return super().fewshot_pool(data, subtask)
        return self._docs(EXEMPLARS.records(data, "exemplars"), subtask, EXEMPLARS.where(data, "exemplars"))

    def select_fewshot(self, pool: Sequence[Doc], k: int, doc: Doc, seed: int) -> list[Doc]:
        if not pool or not all(shot.fields["exemplar"] for shot in pool):
            return super().select_fewshot(pool, k, doc, seed)
        if k > len(pool):
            raise EvalHarnessError(f"{doc.subtask}: {k} few-shot examples asked for, the pool has {len(pool)}")
        return list(pool[:k])  # the exemplars in their order, the same for every question

    def config(self) -> dict[str, Any]:
        return {**super().config(), "fewshot_sampling": "first_n (local exemplars) or seeded (hub train)",
                "approximate": True, "approximation": APPROXIMATION}
