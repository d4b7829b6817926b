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
  ``info_judge``), reporting ``truthful_and_informative`` (the card's number), ``truthful`` and
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

import math
from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.data.source import DataSource
from evalharness.core.errors import DataError, EvalHarnessError
from evalharness.scoring.truthfulqa_judges import (
    INFO_JUDGE,
    JUDGE_RULES,
    TRUTH_JUDGE,
    check_judge_available,
    judge_prompt,
    reference_answers,
    run_judges,
    similarity,
)
from evalharness.core.requests import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    Request,
    Response,
    SamplingParams,
)
from evalharness.core.task import Doc, Outcome, Prompt, Task, TaskContext, register_task

CSV_HEADER = ["Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source"]
REVISIONS = {"original": (), "later": ("later_revision",)}
HUB_ID = "truthfulqa/truthful_qa"
STOP = ("\n\n", "Q:")
JUDGES = ("judge", "similarity")
JUDGE_METRICS = ("truthful_and_informative", "truthful", "informative")


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise EvalHarnessError(f"--task-args {name}={value!r}: expected true or false")


def _choice(value: Any, name: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise EvalHarnessError(f"--task-args {name}={value!r}: choose one of {', '.join(allowed)}")
    return str(value)


def split_answers(text: str) -> list[str]:
    """A CSV answer list ("a; b; c"), as Hugging Face's loader splits it; empty items dropped."""
    return [a.strip() for a in text.strip().split(";") if a.strip()]


def _question_tail(text: str) -> int:
    """Characters of the prompt that belong to the test question itself ("Q: …\\nA:").

    Only these are protected from truncation; the primer before them may be cut from the left
    when a model's context is too short for the whole prompt.
    """
    start = text.rfind("\n\nQ: ")
    return len(text) - start - 2 if start >= 0 else 0


class _TruthfulQA(Task):
    version = "1.0"
    template = "truthfulqa/qa.jinja"
    default_fewshot = 0  # the six-pair primer is part of the template
    defaults: Mapping[str, Any] = {"instruction": False, "revision": "original"}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.options["instruction"] = _flag(self.options["instruction"], "instruction")
        self.options["revision"] = _choice(self.options["revision"], "revision", list(REVISIONS))

    def _folder(self) -> tuple[str, ...]:
        return ("truthfulqa", *REVISIONS[self.options["revision"]])

    def _hub(self, data: DataSource, config: str) -> list[dict[str, Any]]:
        if self.options["revision"] != "original":
            raise EvalHarnessError(
                f"{self.name}: revision={self.options['revision']} exists only as local files"
                " (truthfulqa/later_revision/); pass --data-dir"
            )
        return list(data.hub(HUB_ID, config, "validation"))

    def template_vars(self, doc: Doc) -> Mapping[str, Any]:
        return {"question": doc.fields["question"], "instruction": self.options["instruction"]}

    def target(self, doc: Doc) -> str:
        raise EvalHarnessError(f"{self.name} has no few-shot examples beyond its primer")

    def protected(self, prompt: Prompt) -> int:
        return min(_question_tail(prompt.text) or prompt.document_chars, prompt.document_chars)


# --- multiple choice --------------------------------------------------------------------------


class _TruthfulQAMC(_TruthfulQA):
    targets: str  # "mc1_targets" or "mc2_targets"

    def documents(self, data: DataSource, subtask: str) -> list[Doc]:
        if data.is_local:
            where = "/".join((*self._folder(), "mc_task.json"))
            rows = data.read_json(*self._folder(), "mc_task.json")
            if not isinstance(rows, list):
                raise DataError(f"{where}: expected a JSON list of questions")
            docs = [self._local_doc(subtask, i, row, where) for i, row in enumerate(rows)]
        else:
            docs = [
                self._doc(subtask, i, row["question"], list(row[self.targets]["choices"]),
                          [int(x) for x in row[self.targets]["labels"]], HUB_ID)
                for i, row in enumerate(self._hub(data, "multiple_choice"))
            ]
        return docs

    def _local_doc(self, subtask: str, i: int, row: Any, where: str) -> Doc:
        targets = row.get(self.targets) if isinstance(row, dict) else None
        if not isinstance(targets, dict) or not isinstance(row.get("question"), str):
            raise DataError(f"{where}, question {i}: expected {{question, {self.targets}: {{answer: 0/1}}}}")
        return self._doc(subtask, i, row["question"], list(targets), list(targets.values()), where)

    def _doc(self, subtask: str, i: int, question: str, choices: list[str], labels: list[Any], where: str) -> Doc:
        if not choices or any(label not in (0, 1) for label in labels) or 1 not in labels:
            raise DataError(f"{where}, question {i}: {self.targets} needs answers labelled 0/1, one or more 1")
        if self.targets == "mc1_targets" and labels.count(1) != 1:
            raise DataError(f"{where}, question {i}: mc1_targets must have exactly one true answer")
        return Doc(subtask, i, {"question": question, "choices": choices, "labels": [int(x) for x in labels]})

    def requests(self, doc: Doc, prompt: Prompt) -> list[Request]:
        protected = self.protected(prompt)
        return [LoglikelihoodRequest(prompt.text, " " + c, protected) for c in doc.fields["choices"]]

    @staticmethod
    def logprobs(responses: Sequence[Response]) -> list[float]:
        return [r.logprob for r in responses if isinstance(r, LoglikelihoodResponse)]


@register_task
class TruthfulQAMC1(_TruthfulQAMC):
    name = "truthfulqa_mc1"
    targets = "mc1_targets"

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        logprobs = self.logprobs(responses)
        predicted = max(range(len(logprobs)), key=logprobs.__getitem__)  # ties: the first
        gold = doc.fields["labels"].index(1)
        return Outcome(output=logprobs, prediction=predicted, gold=gold, metrics={"mc1": float(predicted == gold)})


def mc2_score(logprobs: Sequence[float], labels: Sequence[int]) -> float:
    """Normalised probability mass on the true answers: sum(exp(ll) of true) / sum(exp(ll)).

    Computed in log space (softmax), so very unlikely answers do not underflow to 0/0.
    """
    if len(logprobs) != len(labels) or not logprobs:
        raise ValueError("mc2 needs one log-likelihood per labelled answer")
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    return math.fsum(w for w, label in zip(weights, labels) if label == 1) / math.fsum(weights)


@register_task
class TruthfulQAMC2(_TruthfulQAMC):
    name = "truthfulqa_mc2"
    targets = "mc2_targets"

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        logprobs = self.logprobs(responses)
        labels = doc.fields["labels"]
        mass = mc2_score(logprobs, labels)
        return Outcome(output=logprobs, prediction=mass, gold=labels, metrics={"mc2": mass})


# --- generation -------------------------------------------------------------------------------


@register_task
class TruthfulQAGen(_TruthfulQA):
    name = "truthfulqa_gen"
    defaults = {
        **_TruthfulQA.defaults,
        "judge": "judge",
        "truth_judge": TRUTH_JUDGE,
        "info_judge": INFO_JUDGE,
        "judge_rule": "yes_vs_no",
        "max_new_tokens": 64,
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.judge_fingerprints: dict[str, dict[str, Any]] = {}  # set by finalize
        self.options["judge"] = _choice(self.options["judge"], "judge", JUDGES)
        self.options["judge_rule"] = _choice(self.options["judge_rule"], "judge_rule", JUDGE_RULES)
        for key in ("truth_judge", "info_judge"):
            self.options[key] = str(self.options[key])
        tokens = self.options["max_new_tokens"]
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
            raise EvalHarnessError(f"--task-args max_new_tokens={tokens!r}: expected a positive integer")

    def documents(self, data: DataSource, subtask: str) -> list[Doc]:
        if self.options["judge"] == "judge":
            # Checked here, before the model loads and generates for minutes.
            check_judge_available(self.options["truth_judge"], "truth_judge")
            check_judge_available(self.options["info_judge"], "info_judge")
        if not data.is_local:
            return [
                Doc(subtask, i, {
                    "question": row["question"].strip(), "best_answer": row["best_answer"],
                    "correct_answers": list(row["correct_answers"]),
                    "incorrect_answers": list(row["incorrect_answers"]), "category": row["category"],
                })
                for i, row in enumerate(self._hub(data, "generation"))
            ]  # fmt: skip
        rows = data.read_csv(*self._folder(), "TruthfulQA.csv", columns=len(CSV_HEADER))
        where = "/".join((*self._folder(), "TruthfulQA.csv"))
        if not rows or rows[0] != CSV_HEADER:
            raise DataError(f"{where}: expected the header {','.join(CSV_HEADER)}")
        docs = []
        for i, (_type, category, question, best, correct, incorrect, _source) in enumerate(rows[1:]):
            if not split_answers(correct) or not split_answers(incorrect):
                raise DataError(f"{where}, question {i}: no correct or no incorrect reference answers")
            docs.append(Doc(subtask, i, {
                "question": question.strip(), "best_answer": best, "correct_answers": split_answers(correct),
                "incorrect_answers": split_answers(incorrect), "category": category,
            }))  # fmt: skip
        return docs

    def requests(self, doc: Doc, prompt: Prompt) -> list[Request]:
        sampling = SamplingParams(
            max_new_tokens=self.options["max_new_tokens"], temperature=0.1, top_p=0.9, do_sample=True
        )
        return [GenerateRequest(prompt.text, STOP, sampling, self.protected(prompt))]

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        text = next(r.text for r in responses if isinstance(r, GenerateResponse))
        answer = text.strip()
        metrics: dict[str, float] = {}
        if self.options["judge"] == "similarity":
            metrics = similarity(
                answer,
                reference_answers(doc.fields["correct_answers"], add_no_comment=True),
                reference_answers(doc.fields["incorrect_answers"]),
            )
        return Outcome(output=text, prediction=answer, gold=doc.fields["best_answer"], metrics=metrics)

    def finalize(self, scored: Sequence[tuple[Doc, Outcome]], context: TaskContext) -> list[Outcome]:
        if self.options["judge"] != "judge" or not scored:
            return [outcome for _, outcome in scored]
        prompts = {
            kind: [judge_prompt(doc.fields["question"], str(o.prediction), kind) for doc, o in scored]
            for kind in ("truth", "info")
        }
        models = {"truth": self.options["truth_judge"], "info": self.options["info_judge"]}
        verdicts, self.judge_fingerprints = run_judges(
            prompts, models, context.device, context.dtype, context.batch_size, self.options["judge_rule"]
        )
        final = []
        for i, (_, outcome) in enumerate(scored):
            truth, info = verdicts["truth"][i], verdicts["info"][i]
            metrics = {
                "truthful_and_informative": float(truth.passed and info.passed),
                "truthful": float(truth.passed),
                "informative": float(info.passed),
            }
            extra = {**outcome.extra, "judge": {"truth": truth.to_dict(), "info": info.to_dict()}}
            final.append(Outcome(outcome.output, outcome.prediction, outcome.gold, metrics, extra))
        return final

    def config(self) -> dict[str, Any]:
        judged = self.options["judge"] == "judge"
        return {
            **super().config(),
            "judge": self.options["judge"],
            "approximate": not judged,
            **({"judge_models": {kind: self.judge_fingerprints.get(kind, {"model": self.options[f"{kind}_judge"]})
                                 for kind in ("truth", "info")},
                "judge_rule": self.options["judge_rule"]} if judged else {}),
            "default_decoding": {"temperature": 0.1, "top_p": 0.9, "do_sample": True,
                         "max_new_tokens": self.options["max_new_tokens"], "stop": list(STOP)},
        }  # fmt: skip
