"""MATH (Hendrycks et al., 2021), 4-shot with the Minerva prompt, as in the Llama 2 card's Math group.

Each of the 5,000 test problems follows Minerva's four fixed exemplars (Lewkowycz et al., 2022),
rendered "Problem:\\n…\\n\\nSolution:\\n<solution>\\nFinal Answer: The final answer is $X$. I hope it
is correct.", blank-line separated, as lm-eval's ``minerva_math``. Greedy (maj1@1) until "Problem:"
or "</s>", 512 new tokens. The answer is X of the final sentence, else the last ``\\boxed{}``; it
matches the reference's last ``\\boxed{}`` after Minerva's normalisation
(``evalharness.shapes.math_answers``). Subtasks ``math_<subject>`` are the seven subjects; groups are the five levels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.core.averages import mean_with_stderr
from evalharness.core.requests import Response
from evalharness.core.task import Doc, Outcome, TaskResult, register_task
from evalharness.data.datasets import Dataset, Fewshot, JsonLines
from evalharness.data.source import DataSource
from evalharness.shapes.answer_extraction import boxed
from evalharness.shapes.math_answers import math_equivalent, minerva_answer
from evalharness.shapes.short_answer import ShortAnswer

SUBJECTS = {
    "algebra": "Algebra", "counting_and_probability": "Counting & Probability", "geometry": "Geometry",
    "intermediate_algebra": "Intermediate Algebra", "number_theory": "Number Theory",
    "prealgebra": "Prealgebra", "precalculus": "Precalculus",
}  # fmt: skip
PREFIX = "math_"

TEST = Dataset(
    "EleutherAI/hendrycks_math", "{subset}", "test",
    JsonLines("math/test.jsonl.gz", ("problem", "solution", "level", "type")),
)  # fmt: skip
EXEMPLARS = Dataset(
    "minerva-math-exemplars", None, "exemplars",
    JsonLines("math/minerva_4shot_exemplars.jsonl", ("problem", "solution", "answer")),
    offline_hint="Minerva's 4 exemplars are read from math/minerva_4shot_exemplars.jsonl; pass --data-dir",
)


@register_task
class MinervaMath(ShortAnswer):
    name = "math"
    version = "1.0"
    template = "math/minerva.jinja"
    dataset = TEST
    fewshot = Fewshot("exemplars", "first_n", EXEMPLARS)
    default_fewshot = 4
    target_delimiter = "\n"
    stop = ("Problem:", "</s>")
    extractors = {"": minerva_answer}
    comparisons = {"exact_match": math_equivalent}
    defaults = {"samples": 1, "max_new_tokens": 512, "pass_at": 0}

    def subtasks(self) -> list[str]:
        return [PREFIX + subject for subject in SUBJECTS]

    def subset(self, subtask: str) -> str:
        return subtask.removeprefix(PREFIX)

    def documents(self, data: DataSource, subtask: str) -> list[Doc]:
        """The subject's problems; ``doc_id`` stays the index in the whole test file (local data)."""
        docs = super().documents(data, subtask)
        if not data.is_local:
            return docs
        return [d for d in docs if d.fields["type"] == SUBJECTS[self.subset(subtask)]]

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        if "answer" in record:  # an exemplar
            return {"problem": str(record["problem"]), "solution": str(record["solution"]),
                    "answer": str(record["answer"])}  # fmt: skip
        if not all(isinstance(record[k], str) for k in ("problem", "solution", "level", "type")):
            raise ValueError("problem, solution, level and type must be strings")
        gold = boxed(record["solution"])
        if gold is None:
            raise ValueError("the solution has no \\boxed{} answer")
        return {"problem": record["problem"], "gold": gold, "level": record["level"], "type": record["type"]}

    def target(self, doc: Doc) -> str:
        fields = doc.fields
        return f"{fields['solution']}\nFinal Answer: The final answer is ${fields['answer']}$. I hope it is correct."

    def references(self, doc: Doc) -> list[str]:
        return [str(doc.fields["gold"])]

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        outcome = super().score(doc, responses)
        return dataclasses.replace(outcome, extra={**outcome.extra, "level": doc.fields["level"]})

    def aggregate(self, outcomes: Mapping[str, Sequence[Outcome]]) -> TaskResult:
        result = super().aggregate(outcomes)
        levels: dict[str, list[float]] = {}
        for docs in outcomes.values():
            for o in docs:
                level = str(o.extra.get("level", "")).lower().replace(" ", "_") or "level_unknown"
                levels.setdefault(level, []).append(o.metrics["exact_match"])
        groups = {level: {"exact_match": mean_with_stderr(v)} for level, v in sorted(levels.items())}
        return dataclasses.replace(result, groups=groups)
