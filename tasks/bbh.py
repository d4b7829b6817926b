"""BIG-Bench Hard (Suzgun et al., 2022), 3-shot chain of thought, as in the Llama 2 card.

27 subtasks (``bbh_<name>``). Each question follows its subtask's own CoT prompt file
(``bbh/cot-prompts/<name>.txt``: the text after the "-----" line, i.e. the task description and
three worked "Q: …\\nA: Let's think step by step. … So the answer is X." examples), then
"\\n\\nQ: <input>\\nA: Let's think step by step." — byte for byte the official prompt. Greedy until
a blank line, "Q:" on a new line or "</s>", 1,024 new tokens (lm-eval's cot_fewshot). The answer
is the rest of the line after "the answer is"; it is compared in the form of the target: "(B)",
True/False and Yes/No words, integers, or whitespace-normalised text. The headline
``exact_match`` is the plain mean of the 27 subtask scores (the card's BBH rule).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.core.averages import mean_of_means, mean_with_stderr, per_document_metrics
from evalharness.core.errors import DataError
from evalharness.core.task import Doc, Outcome, TaskResult, register_task
from evalharness.data.datasets import Dataset, Fewshot, JsonDocument, Record
from evalharness.data.source import DataSource
from evalharness.shapes.answer_extraction import after_the_answer_is, answer_form_match
from evalharness.shapes.short_answer import ShortAnswer

SUBTASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa",
    "dyck_languages", "formal_fallacies", "geometric_shapes", "hyperbaton",
    "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "movie_recommendation", "multistep_arithmetic_two",
    "navigate", "object_counting", "penguins_in_a_table", "reasoning_about_colored_objects",
    "ruin_names", "salient_translation_error_detection", "snarks", "sports_understanding",
    "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects",
    "web_of_lies", "word_sorting",
)  # fmt: skip
COT_CUE = "\nA: Let's think step by step."


def parse_cot_prompt(text: str) -> list[Record]:
    """A CoT prompt file as its worked examples: ``input``, ``reasoning`` (with its leading
    newline or space) and ``preamble`` (the task description, carried by the first example)."""
    _, separator, body = text.partition("-----\n")
    if not separator:
        raise ValueError("no '-----' line after the canary")
    description, *blocks = body.rstrip("\n").split("\n\nQ: ")
    if not blocks or not description.strip():
        raise ValueError("expected a description, then examples starting with 'Q: '")
    examples = []
    for number, block in enumerate(blocks, start=1):
        question, cue, reasoning = block.partition(COT_CUE)
        if not cue or not reasoning.strip():
            raise ValueError(f"example {number} has no \"A: Let's think step by step.\" answer")
        preamble = description + "\n\n" if number == 1 else ""
        examples.append({"input": question, "reasoning": reasoning, "preamble": preamble})
    return examples


@dataclasses.dataclass(frozen=True)
class CotPromptFile:
    """The local adapter for one subtask's CoT prompt file (a text file, not records)."""

    path: str

    def read(self, data: DataSource, split: str, subset: str | None) -> list[Record]:
        parts = self.path.format(subset=subset or "").split("/")
        try:
            return parse_cot_prompt(data.read_text(*parts))
        except ValueError as exc:
            where = data.root.joinpath(*parts) if data.root else self.path
            raise DataError(f"{where}: {exc}") from None


def examples(document: Any) -> list[Record]:
    return list(document["examples"])


TEST = Dataset("lukaemon/bbh", "{subset}", "test", JsonDocument("bbh/bbh/{subset}.json", examples))
COT_PROMPTS = Dataset(
    "bbh-cot-prompts", None, "cot", CotPromptFile("bbh/cot-prompts/{subset}.txt"),
    offline_hint="the CoT prompts are read from bbh/cot-prompts/<task>.txt; pass --data-dir",
)


@register_task
class BBH(ShortAnswer):
    name = "bbh"
    version = "1.0"
    template = "bbh/cot.jinja"
    dataset = TEST
    fewshot = Fewshot("cot", "first_n", COT_PROMPTS, note="the 3 worked examples of the subtask's CoT prompt file")
    default_fewshot = 3
    target_delimiter = ""  # each reasoning keeps its own leading newline (or space)
    stop = ("\n\nQ:", "\nQ:", "\n\n", "</s>")
    extractors = {"": after_the_answer_is}
    comparisons = {"exact_match": answer_form_match}
    defaults = {"samples": 1, "max_new_tokens": 1024, "pass_at": 0}

    def subtasks(self) -> list[str]:
        return [f"bbh_{name}" for name in SUBTASKS]

    def subset(self, subtask: str) -> str:
        return subtask.removeprefix("bbh_")

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        if "reasoning" in record:  # a worked example of the CoT prompt
            return record
        if not isinstance(record["input"], str) or not isinstance(record["target"], str):
            raise ValueError("input and target must be strings")
        return {"input": record["input"], "target": record["target"], "preamble": ""}

    def target(self, doc: Doc) -> str:
        return str(doc.fields["reasoning"])

    def references(self, doc: Doc) -> list[str]:
        return [str(doc.fields["target"])]

    def aggregate(self, outcomes: Mapping[str, Sequence[Outcome]]) -> TaskResult:
        subtasks = {name: per_document_metrics(o.metrics for o in docs) for name, docs in outcomes.items()}
        everything = [o.metrics["exact_match"] for docs in outcomes.values() for o in docs]
        metrics = {
            "exact_match": mean_of_means(s["exact_match"] for s in subtasks.values()),  # the card's rule
            "exact_match_micro": mean_with_stderr(everything),
        }
        return TaskResult(metrics, subtasks)
