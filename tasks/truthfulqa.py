"""TruthfulQA (Lin, Hilton & Evans, 2021): 817 questions that some humans answer falsely.

Every prompt is TruthfulQA's fixed six-pair QA primer followed by ``\\n\\nQ: {question}\\nA:``
(``prompts/truthfulqa/qa.jinja``); ``instruction=true`` prepends InstructGPT's instruction
("Interpret each question literally, …"). Nothing beyond the primer is shown (0-shot).

- ``truthfulqa_gen`` is the card's metric. The model answers with temperature 0.1 and top-p 0.9
  (seeded per question by the runner), up to 64 new tokens, until a blank line or the next
  "Q:" (greedy: ``--gen-kwargs do_sample=false``). The question is stripped (one has a trailing
  space), as lm-eval does. The stripped answers are judged by ``judge``:
  ``judge`` (default, faithful): two fine-tuned judge models, truth and info (default
  ``allenai/truthfulqa-{truth,info}-judge-llama2-7B``, or local folders via ``truth_judge``,
  ``info_judge``), passing when P(" yes") >= 0.5 (the card's rule; ``judge_rule=yes_vs_no``
  passes when " yes" is at least as likely as " no"), reporting ``truthful_and_informative`` (the card's number), ``truthful`` and
  ``informative``; ``similarity`` (offline, approximate): lm-eval's BLEU/ROUGE proxy,
  ``{bleu,rouge1,rouge2,rougeL}_{max,acc,diff}``. results.json records ``judge`` and
  ``approximate`` for the task (and, for the judges, their weights' fingerprints). The judge
  models are checked before generation starts (a local folder must exist; a hub id must be
  cached when HF_HUB_OFFLINE is set) and load only after it, one at a time.
- ``truthfulqa_mc1``: the log-likelihood of " " + each ``mc1_targets`` answer; correct when the
  single true answer scores highest.
- ``truthfulqa_mc2``: the probability mass on the true ``mc2_targets`` answers, each answer's
  probability being exp(log-likelihood), normalised over all of the question's answers
  (the Open LLM Leaderboard's TruthfulQA number).

Data: ``TruthfulQA.csv`` (generation; UTF-8 with a byte-order mark) and ``mc_task.json``
(multiple choice) list the questions in different orders; ``doc_id`` is the index in the file a
task reads. ``revision=later`` reads ``later_revision/`` (upstream's revised reference answers)
instead of the original files that Hugging Face and lm-eval use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalharness.core.errors import EvalHarnessError
from evalharness.core.task import Doc, Prompt, Task, register_task
from evalharness.data.datasets import CsvRows, Dataset, JsonDocument
from evalharness.scoring.scorer import Scorer
from evalharness.scoring.truthfulqa_judges import (
    INFO_JUDGE,
    JUDGE_RULES,
    TRUTH_JUDGE,
    JudgeScorer,
    SimilarityScorer,
)
from evalharness.shapes.generating import option_choice, option_flag
from evalharness.shapes.multiple_choice import MultipleChoice
from evalharness.shapes.scored_generation import ScoredGeneration

CSV_HEADER = ["Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source"]
FOLDERS = {"original": "truthfulqa", "later": "truthfulqa/later_revision"}
HUB_ID = "truthfulqa/truthful_qa"
LATER_HINT = "revision=later exists only as local files (truthfulqa/later_revision/); pass --data-dir"
JUDGES = ("judge", "similarity")


def split_answers(text: str) -> list[str]:
    """A CSV answer list ("a; b; c"), as Hugging Face's loader splits it; empty items dropped."""
    return [a.strip() for a in text.strip().split(";") if a.strip()]


def generation_record(row: list[str]) -> dict[str, Any]:
    """A TruthfulQA.csv row in the hub's ``generation`` schema."""
    if row == CSV_HEADER:
        raise ValueError("the header row appears twice")
    kind, category, question, best, correct, incorrect, source = row
    if not split_answers(correct) or not split_answers(incorrect):
        raise ValueError("no correct or no incorrect reference answers")
    return {
        "type": kind, "category": category, "question": question, "best_answer": best,
        "correct_answers": split_answers(correct), "incorrect_answers": split_answers(incorrect), "source": source,
    }  # fmt: skip


def mc_records(document: Any) -> list[dict[str, Any]]:
    """mc_task.json ({question, mc1_targets: {answer: 0/1}, …}) in the hub's schema."""
    if not isinstance(document, list):
        raise ValueError("expected a JSON list of questions")
    return [
        {"question": row["question"],
         **{key: {"choices": list(row[key]), "labels": list(row[key].values())} for key in ("mc1_targets", "mc2_targets")}}
        for row in document
    ]  # fmt: skip


def datasets(folder: str, hub: bool) -> tuple[Dataset, Dataset]:
    """(generation, multiple choice) data in one revision's folder."""
    hub_id, hint = (HUB_ID, "") if hub else ("", LATER_HINT)
    generation = Dataset(hub_id, "generation", "validation",
                         CsvRows(f"{folder}/TruthfulQA.csv", 7, generation_record, header=tuple(CSV_HEADER)),
                         offline_hint=hint)  # fmt: skip
    multiple_choice = Dataset(hub_id, "multiple_choice", "validation",
                              JsonDocument(f"{folder}/mc_task.json", mc_records), offline_hint=hint)
    return generation, multiple_choice


REVISIONS = {"original": datasets(FOLDERS["original"], hub=True), "later": datasets(FOLDERS["later"], hub=False)}


def question_tail(text: str) -> int:
    """Characters of the prompt that belong to the test question itself ("Q: …\\nA:").

    Only these are protected from truncation; the primer before them may be cut from the left
    when a model's context is too short for the whole prompt.
    """
    start = text.rfind("\n\nQ: ")
    return len(text) - start - 2 if start >= 0 else 0


class _Primed(Task):
    """What the three tasks share: the primer template, its options and the protected tail."""

    template = "truthfulqa/qa.jinja"
    version = "1.0"
    default_fewshot = 0  # the six-pair primer is part of the template

    def check_common(self) -> None:
        self.options["instruction"] = option_flag(self, "instruction")
        option_choice(self, "revision", list(REVISIONS))

    def template_vars(self, doc: Doc) -> Mapping[str, Any]:
        return {"question": doc.fields["question"], "instruction": self.options["instruction"]}

    def target(self, doc: Doc) -> str:
        raise EvalHarnessError(f"{self.name} has no few-shot examples beyond its primer")

    def protected_chars(self, doc: Doc, prompt: Prompt) -> int:
        return min(question_tail(prompt.text) or prompt.document_chars, prompt.document_chars)


COMMON = {"instruction": False, "revision": "original"}


class _TruthfulQAMC(_Primed, MultipleChoice):
    targets: str  # "mc1_targets" or "mc2_targets"
    defaults = COMMON

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.check_common()
        self.dataset = REVISIONS[self.options["revision"]][1]

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        choices, labels = list(record[self.targets]["choices"]), [int(x) for x in record[self.targets]["labels"]]
        if not choices or any(label not in (0, 1) for label in labels) or 1 not in labels:
            raise ValueError(f"{self.targets} needs answers labelled 0/1, one or more 1")
        if self.targets == "mc1_targets" and labels.count(1) != 1:
            raise ValueError("mc1_targets must have exactly one true answer")
        return {"question": record["question"], "choices": choices, "labels": labels, "answer": labels.index(1)}


@register_task
class TruthfulQAMC1(_TruthfulQAMC):
    name = "truthfulqa_mc1"
    targets = "mc1_targets"
    metrics = ("mc1",)


@register_task
class TruthfulQAMC2(_TruthfulQAMC):
    name = "truthfulqa_mc2"
    targets = "mc2_targets"
    metrics = ("mc2",)


@register_task
class TruthfulQAGen(_Primed, ScoredGeneration):
    name = "truthfulqa_gen"
    stop = ("\n\n", "Q:")
    temperature, top_p = 0.1, 0.9  # §4.1
    defaults = {
        **COMMON, "judge": "judge", "truth_judge": TRUTH_JUDGE, "info_judge": INFO_JUDGE,
        "judge_rule": "p_yes", "max_new_tokens": 64,
    }  # fmt: skip

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.check_common()
        option_choice(self, "judge", JUDGES)
        option_choice(self, "judge_rule", JUDGE_RULES)
        self.dataset = REVISIONS[self.options["revision"]][0]

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        return {
            "question": record["question"].strip(), "best_answer": record["best_answer"],
            "correct_answers": list(record["correct_answers"]),
            "incorrect_answers": list(record["incorrect_answers"]), "category": record["category"],
        }  # fmt: skip

    def gold(self, doc: Doc) -> Any:
        return doc.fields["best_answer"]

    def scorer(self, data_dir: str | None) -> Scorer:
        if self.options["judge"] == "similarity":
            return SimilarityScorer()
        return JudgeScorer(str(self.options["truth_judge"]), str(self.options["info_judge"]), self.options["judge_rule"])

    def config(self) -> dict[str, Any]:
        return {**super().config(), "default_decoding": self.decoding()}
