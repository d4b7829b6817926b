"""AGIEval (Zhong et al., 2023), the 8 English multiple-choice tasks, few-shot, as in the Llama 2 card.

Subtasks ``agieval_<task>``. Each question follows the authors' own exemplars for its task from
``few_shot_prompts.csv`` (all of them: 5 for AQuA-RAT and SAT-math, 3 for the others; SAT-en
without passage reuses SAT-en's without their passages), in the authors' "few-shot" (no
explanation) format: "Here are the answers for the problems in the exam.\\n", then "Problem N.
<passage> <question>\\nChoose from the following options:    (A)… (B)…\\nThe answer is therefore X"
blank-line separated. The model scores the option letters " A", " B", … as continuations of the
test problem's "The answer is therefore"; the prediction is the most likely letter. The headline
``acc`` is question-weighted over the 8 tasks (the card's AGI Eval rule: 7B 29.30).
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.core.errors import DataError, EvalHarnessError
from evalharness.core.requests import Response
from evalharness.core.task import Doc, Outcome, TaskResult, register_task
from evalharness.data.datasets import Dataset, Fewshot, JsonLines, Record
from evalharness.data.source import DataSource
from evalharness.shapes.multiple_choice import MultipleChoice

TASKS = ("aqua-rat", "logiqa-en", "lsat-ar", "lsat-lr", "lsat-rc", "sat-en", "sat-en-without-passage", "sat-math")
LETTERS = "ABCDEFG"
NO_PASSAGE = "sat-en-without-passage"  # the exemplars of sat-en, passages left out (as the authors do)


@dataclasses.dataclass(frozen=True)
class FewShotPromptsCsv:
    """The authors' few_shot_prompts.csv: a header of task names, then for each exemplar a row
    holding its record (a Python literal) and a row holding its explanation (unused here)."""

    path: str

    def read(self, data: DataSource, split: str, subset: str | None) -> list[Record]:
        parts = self.path.split("/")
        where = data.root.joinpath(*parts) if data.root else self.path
        rows = data.read_csv(*parts, columns=21)
        column = (subset or "").replace(NO_PASSAGE, "sat-en")
        if not rows or column not in rows[0]:
            raise DataError(f"{where}: no column {column!r} in the header")
        index, records = rows[0].index(column), []
        for row_no in range(1, len(rows), 2):  # context rows; the row after each is its explanation
            cell = rows[row_no][index]
            if not cell:
                continue
            try:
                record = ast.literal_eval(cell)
                if not isinstance(record, dict):
                    raise ValueError("not a dict literal")
            except (ValueError, SyntaxError) as exc:
                raise DataError(f"{where}, record {row_no + 1}, column {column}: unreadable exemplar ({exc})") from None
            records.append({**record, "passage": None} if subset == NO_PASSAGE else record)
        return records


TEST = Dataset("agieval", "{subset}", "test", JsonLines("agieval/v1/{subset}.jsonl", ("question", "options", "label")))
EXEMPLARS = Dataset(
    "agieval-few-shot", None, "fewshot", FewShotPromptsCsv("agieval/few_shot_prompts.csv"),
    offline_hint="the authors' exemplars are read from agieval/few_shot_prompts.csv; pass --data-dir",
)


@register_task
class AGIEval(MultipleChoice):
    name = "agieval"
    version = "1.0"
    template = "agieval/fewshot.jinja"
    dataset = TEST
    fewshot = Fewshot("fewshot", "first_n", EXEMPLARS, note="all of the authors' exemplars of the task (3 or 5)")
    default_fewshot = 5  # at most; a task with 3 exemplars uses its 3 (results.json: fewshot_per_subtask)
    metrics = ("acc",)
    labelled_output = True

    def subtasks(self) -> list[str]:
        return [f"agieval_{task.replace('-', '_')}" for task in TASKS]

    def subset(self, subtask: str) -> str:
        return subtask.removeprefix("agieval_").replace("_", "-")

    def description(self, subtask: str) -> str:
        return "Here are the answers for the problems in the exam.\n"

    def documents(self, data: DataSource, subtask: str) -> list[Doc]:
        """Each test problem is numbered after the task's exemplars ("Problem 4." after 3)."""
        shots = len(self.fewshot_pool(data, subtask))
        return [dataclasses.replace(d, fields={**d.fields, "number": shots + 1, "shots": shots})
                for d in super().documents(data, subtask)]  # fmt: skip

    def fewshot_pool(self, data: DataSource, subtask: str) -> list[Doc]:
        pool = super().fewshot_pool(data, subtask)
        return [dataclasses.replace(d, fields={**d.fields, "number": d.doc_id + 1}) for d in pool]

    def select_fewshot(self, pool: Sequence[Doc], k: int, doc: Doc, seed: int) -> list[Doc]:
        if k == self.default_fewshot or k == len(pool):
            return list(pool)
        raise EvalHarnessError(
            f"{doc.subtask}: AGIEval uses all {len(pool)} of the authors' exemplars; --num-fewshot {k} is not supported"
        )

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        options, label = record["options"], record["label"]
        if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS):
            raise ValueError("options must be a list of 2 to 7 choices")
        if not isinstance(label, str) or label not in LETTERS[: len(options)]:
            raise ValueError(f"label {label!r} is not one of the option letters")
        return {"passage": record.get("passage") or "", "question": str(record["question"]),
                "options": [str(o) for o in options], "label": label}  # fmt: skip

    def choices(self, doc: Doc) -> Sequence[str]:
        return list(LETTERS[: len(doc.fields["options"])])

    def gold(self, doc: Doc) -> int:
        return LETTERS.index(doc.fields["label"])

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        outcome = super().score(doc, responses)
        return dataclasses.replace(outcome, extra={**outcome.extra, "shots": doc.fields["shots"]})

    def aggregate(self, outcomes: Mapping[str, Sequence[Outcome]]) -> TaskResult:
        result = super().aggregate(outcomes)  # pooled over all questions: question-weighted
        return dataclasses.replace(result, details={"fewshot_per_subtask": self._shots(outcomes)})

    @staticmethod
    def _shots(outcomes: Mapping[str, Sequence[Outcome]]) -> dict[str, int]:
        return {name: int(docs[0].extra["shots"]) for name, docs in outcomes.items() if docs}
