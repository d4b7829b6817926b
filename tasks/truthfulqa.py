"""TruthfulQA (Lin, Hilton & Evans, 2021): 817 questions that some humans answer falsely.

Every prompt is TruthfulQA's fixed six-pair QA primer followed by ``\\n\\nQ: {question}\\nA:``
(``prompts/truthfulqa/qa.jinja``); ``instruction=true`` prepends InstructGPT's instruction
("Interpret each question literally, …"). Nothing beyond the primer is shown (0-shot).

- ``truthfulqa_gen`` is the card's metric. The model answers with temperature 0.1 and top-p 0.9
  (seeded per question by the runner), up to 64 new tokens, until a blank line or the next
  "Q:" (greedy: ``--gen-kwargs do_sample=false``). The question is stripped (one has a trailing
  space), as lm-eval does. The stripped answers are judged by ``judge``
  (``evalharness.scoring.truthfulqa_judges``): ``judge`` (default, faithful), two fine-tuned judge
  models (``truth_judge``, ``info_judge``; default ``allenai/truthfulqa-{truth,info}-judge-llama2-7B``)
  passing when P(" yes") >= 0.5 (the card's rule; ``judge_rule=yes_vs_no``: " yes" at least as
  likely as " no"), reporting ``truthful_and_informative`` (the card's number), ``truthful`` and
  ``informative``; or ``similarity`` (offline, approximate), lm-eval's BLEU/ROUGE proxy
  ``{bleu,rouge1,rouge2,rougeL}_{max,acc,diff}``. results.json records ``judge``, ``approximate``
  and the judges' fingerprints; the judges are checked before generation starts (a local folder
  must exist; a hub id must be cached when HF_HUB_OFFLINE is set) and load after it, one at a time.
- ``truthfulqa_mc1``: the log-likelihood of " " + each ``mc1_targets`` answer; correct when the
  single true answer scores highest. Both check their answers' 0/1 labels.
- ``truthfulqa_mc2``: the probability mass (exp(log-likelihood), normalised over the question's
  answers) on the true ``mc2_targets`` answers (the Open LLM Leaderboard's TruthfulQA number).

Data: ``TruthfulQA.csv`` (generation; UTF-8 with a byte-order mark) and ``mc_task.json``
(multiple choice), read by declared adapters (``evalharness.data.adapters``) in the hub's schema,
list the questions in different orders; ``doc_id`` is the index in the file a task reads.
``revision=later`` reads ``later_revision/`` (upstream's revised reference answers) instead of
the original files that Hugging Face and lm-eval use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from evalharness.core.errors import EvalHarnessError
from evalharness.core.task import Doc, Prompt, Task, register_task
from evalharness.data.adapters import AnswerMaps, CsvTable
from evalharness.data.datasets import Dataset, JsonDocument, LocalAdapter
from evalharness.scoring.scorer import Scorer
from evalharness.scoring.truthfulqa_judges import INFO_JUDGE, JUDGE_RULES, TRUTH_JUDGE, JudgeScorer, SimilarityScorer
from evalharness.shapes.generating import option_choice, option_flag
from evalharness.shapes.multiple_choice import MultipleChoice, labelled_choices
from evalharness.shapes.scored_generation import ScoredGeneration

# TruthfulQA.csv's header → the hub's ``generation`` fields; the answer lists are ";"-separated.
CSV_COLUMNS = {
    "Type": "type", "Category": "category", "Question": "question", "Best Answer": "best_answer",
    "Correct Answers": "correct_answers", "Incorrect Answers": "incorrect_answers", "Source": "source",
}  # fmt: skip
MC_TARGETS = AnswerMaps(("question",), ("mc1_targets", "mc2_targets"))  # mc_task.json → the hub's schema
HUB_ID = "truthfulqa/truthful_qa"
LATER_HINT = "revision=later exists only as local files (truthfulqa/later_revision/); pass --data-dir"
JUDGES = ("judge", "similarity")


def datasets(folder: str, hub: bool) -> dict[str, Dataset]:
    """One revision's data, by the hub's configuration: generation and multiple choice."""
    hub_id, hint = (HUB_ID, "") if hub else ("", LATER_HINT)
    local: dict[str, LocalAdapter] = {
        "generation": CsvTable(f"{folder}/TruthfulQA.csv", CSV_COLUMNS, lists=("correct_answers", "incorrect_answers")),
        "multiple_choice": JsonDocument(f"{folder}/mc_task.json", MC_TARGETS),
    }
    return {config: Dataset(hub_id, config, "validation", adapter, offline_hint=hint) for config, adapter in local.items()}


REVISIONS = {"original": datasets("truthfulqa", hub=True), "later": datasets("truthfulqa/later_revision", hub=False)}


class _Primed(Task):
    """What the three tasks share: the primer template, its options, the data and the protected tail."""

    template = "truthfulqa/qa.jinja"
    version = "1.0"
    default_fewshot = 0  # the six-pair primer is part of the template
    data_config: ClassVar[str]  # which of a revision's datasets the task reads

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.options["instruction"] = option_flag(self, "instruction")
        self.dataset = REVISIONS[option_choice(self, "revision", list(REVISIONS))][self.data_config]

    def template_vars(self, doc: Doc) -> Mapping[str, Any]:
        return {"question": doc.fields["question"], "instruction": self.options["instruction"]}

    def target(self, doc: Doc) -> str:
        raise EvalHarnessError(f"{self.name} has no few-shot examples beyond its primer")

    def protected_chars(self, doc: Doc, prompt: Prompt) -> int:
        return prompt.last_block_chars("Q: ")  # the test question; the primer may be cut


COMMON = {"instruction": False, "revision": "original"}


class _TruthfulQAMC(_Primed, MultipleChoice):
    targets: str  # "mc1_targets" or "mc2_targets"
    defaults = COMMON
    data_config = "multiple_choice"

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        single_true = self.targets == "mc1_targets"
        return {"question": record["question"], **labelled_choices(record[self.targets], self.targets, single_true)}


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
    data_config = "generation"
    defaults = {
        **COMMON, "judge": "judge", "truth_judge": TRUTH_JUDGE, "info_judge": INFO_JUDGE,
        "judge_rule": "p_yes", "max_new_tokens": 64,
    }  # fmt: skip

    def check_options(self) -> None:
        super().check_options()
        option_choice(self, "judge", JUDGES)
        option_choice(self, "judge_rule", JUDGE_RULES)

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
