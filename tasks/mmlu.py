"""MMLU (Hendrycks et al., 2021), 5-shot, as the Llama 2 card measures it.

57 subjects. Each question is preceded by the first five rows of its subject's dev split, the
same exemplars for every question of the subject. The model scores " A", " B", " C" and " D" as
continuations of "Answer:"; the prediction is the most likely letter. The card's number is the
question-weighted (micro) mean over all 14,042 test questions; the Open LLM Leaderboard's is the
unweighted mean over the 57 subjects. Categories follow lm-eval's mapping (anatomy is STEM).

Two spellings are options, since either may be the card's (README, "MMLU as the card measures
it"): ``strip_questions`` (lm-eval strips each question; the Hendrycks code and this default do
not) and ``hendrycks_header`` (the Hendrycks code's "about  {subject}" with two spaces; lm-eval
and this default have one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.core.averages import mean_of_means, mean_with_stderr, per_document_metrics
from evalharness.core.task import Doc, Outcome, TaskResult, register_task
from evalharness.data.datasets import CsvRows, Dataset, Fewshot
from evalharness.shapes.generating import option_flag
from evalharness.shapes.multiple_choice import MultipleChoice

LETTERS = ("A", "B", "C", "D")

STEM, HUMANITIES, SOCIAL, OTHER = "stem", "humanities", "social_sciences", "other"
SUBJECTS: dict[str, str] = {
    "abstract_algebra": STEM, "anatomy": STEM, "astronomy": STEM, "business_ethics": OTHER,
    "clinical_knowledge": OTHER, "college_biology": STEM, "college_chemistry": STEM,
    "college_computer_science": STEM, "college_mathematics": STEM, "college_medicine": OTHER,
    "college_physics": STEM, "computer_security": STEM, "conceptual_physics": STEM,
    "econometrics": SOCIAL, "electrical_engineering": STEM, "elementary_mathematics": STEM,
    "formal_logic": HUMANITIES, "global_facts": OTHER, "high_school_biology": STEM,
    "high_school_chemistry": STEM, "high_school_computer_science": STEM,
    "high_school_european_history": HUMANITIES, "high_school_geography": SOCIAL,
    "high_school_government_and_politics": SOCIAL, "high_school_macroeconomics": SOCIAL,
    "high_school_mathematics": STEM, "high_school_microeconomics": SOCIAL,
    "high_school_physics": STEM, "high_school_psychology": SOCIAL,
    "high_school_statistics": STEM, "high_school_us_history": HUMANITIES,
    "high_school_world_history": HUMANITIES, "human_aging": OTHER, "human_sexuality": SOCIAL,
    "international_law": HUMANITIES, "jurisprudence": HUMANITIES,
    "logical_fallacies": HUMANITIES, "machine_learning": STEM, "management": OTHER,
    "marketing": OTHER, "medical_genetics": OTHER, "miscellaneous": OTHER,
    "moral_disputes": HUMANITIES, "moral_scenarios": HUMANITIES, "nutrition": OTHER,
    "philosophy": HUMANITIES, "prehistory": HUMANITIES, "professional_accounting": OTHER,
    "professional_law": HUMANITIES, "professional_medicine": OTHER,
    "professional_psychology": SOCIAL, "public_relations": SOCIAL,
    "security_studies": SOCIAL, "sociology": SOCIAL, "us_foreign_policy": SOCIAL,
    "virology": OTHER, "world_religions": HUMANITIES,
}  # fmt: skip


def subject_of(subtask: str) -> str:
    return subtask.removeprefix("mmlu_")


def from_csv_row(row: list[str]) -> dict[str, Any]:
    """An original Hendrycks CSV row (question, A, B, C, D, letter) in cais/mmlu's schema."""
    question, a, b, c, d, letter = row
    if letter not in LETTERS:
        raise ValueError(f"answer {letter!r} is not A-D")
    return {"question": question, "choices": [a, b, c, d], "answer": LETTERS.index(letter)}


@register_task
class MMLU(MultipleChoice):
    name = "mmlu"
    version = "1.0"
    template = "mmlu/default.jinja"
    dataset = Dataset("cais/mmlu", "{subset}", "test", CsvRows("mmlu/{split}/{subset}_{split}.csv", 6, from_csv_row))
    fewshot = Fewshot("dev", "first_n")
    default_fewshot = 5
    metrics = ("acc",)
    labelled_output = True  # samples log {"A": ll, …} and the letters
    defaults = {"strip_questions": False, "hendrycks_header": False}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for key in self.defaults:
            self.options[key] = option_flag(self, key)

    def subtasks(self) -> list[str]:
        return [f"mmlu_{subject}" for subject in SUBJECTS]

    def subset(self, subtask: str) -> str:
        return subject_of(subtask)

    def description(self, subtask: str) -> str:
        topic = subject_of(subtask).replace("_", " ")
        about = "about  " if self.options["hendrycks_header"] else "about "  # format_subject's leading space
        return f"The following are multiple choice questions (with answers) {about}{topic}.\n\n"

    def template_vars(self, doc: Doc) -> Mapping[str, Any]:
        if self.options["strip_questions"]:
            return {**doc.fields, "question": doc.fields["question"].strip()}
        return doc.fields

    def choices(self, doc: Doc) -> Sequence[str]:
        return LETTERS  # the model scores " A" … " D" after "Answer:"

    def aggregate(self, outcomes: Mapping[str, Sequence[Outcome]]) -> TaskResult:
        subjects = {name: per_document_metrics(o.metrics for o in docs) for name, docs in outcomes.items()}
        categories: dict[str, list[float]] = {}
        for name, docs in outcomes.items():
            categories.setdefault(SUBJECTS[subject_of(name)], []).extend(o.metrics["acc"] for o in docs)
        everything = [o.metrics["acc"] for docs in outcomes.values() for o in docs]
        metrics = {
            "acc": mean_with_stderr(everything),  # the card's number: micro over questions
            "acc_macro": mean_of_means(s["acc"] for s in subjects.values()),
        }
        groups = {cat: {"acc": mean_with_stderr(v)} for cat, v in sorted(categories.items())}
        return TaskResult(metrics, subjects, groups)
