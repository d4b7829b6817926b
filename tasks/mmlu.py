"""MMLU (Hendrycks et al., 2021), 5-shot, as the Llama 2 card measures it.

57 subjects. Each question is preceded by the first five rows of its subject's dev split, the
same exemplars for every question of the subject. The model scores " A", " B", " C" and " D" as
continuations of "Answer:"; the prediction is the most likely letter. The card's number is the
question-weighted (micro) mean over all 14,042 test questions; the Open LLM Leaderboard's is the
unweighted mean over the 57 subjects. Categories follow lm-eval's mapping (anatomy is STEM).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from evalharness.data.source import DataSource
from evalharness.core.errors import DataError
from evalharness.core.averages import mean_of_means, mean_with_stderr, per_document_metrics
from evalharness.core.requests import LoglikelihoodRequest, LoglikelihoodResponse, Response
from evalharness.core.task import Aggregate, Doc, Outcome, Prompt, Task, register_task

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


@register_task
class MMLU(Task):
    name = "mmlu"
    version = "1.0"
    template = "mmlu/default.jinja"
    default_fewshot = 5
    fewshot_sampling = "first_n"

    def subtasks(self) -> list[str]:
        return [f"mmlu_{subject}" for subject in SUBJECTS]

    def description(self, subtask: str) -> str:
        topic = subject_of(subtask).replace("_", " ")
        return f"The following are multiple choice questions (with answers) about {topic}.\n\n"

    def _load(self, data: DataSource, subtask: str, split: str) -> list[Doc]:
        subject = subject_of(subtask)
        if not data.is_local:
            rows = data.hub("cais/mmlu", subject, split)
            return [
                Doc(subtask, i, {"question": r["question"], "choices": list(r["choices"]), "answer": int(r["answer"])})
                for i, r in enumerate(rows)
            ]
        filename = f"{subject}_{split}.csv"
        docs = []
        for i, (question, a, b, c, d, letter) in enumerate(
            data.read_csv("mmlu", split, filename, columns=6)
        ):
            if letter not in LETTERS:
                raise DataError(
                    f"{data.root}/mmlu/{split}/{filename}, row {i + 1}: answer {letter!r} is not A-D"
                )
            docs.append(Doc(subtask, i, {"question": question, "choices": [a, b, c, d], "answer": LETTERS.index(letter)}))
        return docs

    def documents(self, data: DataSource, subtask: str) -> list[Doc]:
        return self._load(data, subtask, "test")

    def fewshot_pool(self, data: DataSource, subtask: str) -> list[Doc]:
        return self._load(data, subtask, "dev")

    def target(self, doc: Doc) -> str:
        return LETTERS[doc.fields["answer"]]

    def requests(self, doc: Doc, prompt: Prompt) -> list[LoglikelihoodRequest]:
        return [
            LoglikelihoodRequest(prompt.text, " " + letter, prompt.document_chars)
            for letter in LETTERS
        ]

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        logprobs = [r.logprob for r in responses if isinstance(r, LoglikelihoodResponse)]
        predicted = max(range(len(logprobs)), key=logprobs.__getitem__)
        gold = doc.fields["answer"]
        return Outcome(
            output=dict(zip(LETTERS, logprobs)),
            prediction=LETTERS[predicted],
            gold=LETTERS[gold],
            metrics={"acc": float(predicted == gold)},
        )

    def aggregate(self, outcomes: Mapping[str, Sequence[Outcome]]) -> Aggregate:
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
        return Aggregate(metrics, subjects, groups)
