"""The benchmark's tasks, one table entry each: what to run on both harnesses and how to read it.

Adding a task: an lm-eval template in ``lm_eval_tasks/`` (its fields filled in by
``lmeval_setup.FIELDS[template]``) and one ``TaskSpec`` below.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

# The ten MMLU subjects with the shortest 5-shot prompts (first 20 test questions), fixed.
MMLU_SUBJECTS = (
    "world_religions", "miscellaneous", "abstract_algebra", "management", "conceptual_physics",
    "electrical_engineering", "philosophy", "anatomy", "human_aging", "medical_genetics",
)  # fmt: skip


def plain_answer(answer: str | None) -> str | None:
    """An extracted answer without surrounding space or a final full stop (lm-eval marks a
    failed extraction "[invalid]")."""
    if answer is None or answer.strip() == "[invalid]":
        return None
    return answer.strip().rstrip(".").strip() or None


def number_answer(answer: str | None) -> str | None:
    """A GSM8K answer without commas, dollar signs or a trailing full stop."""
    plain = plain_answer(answer)
    if plain is None:
        return None
    return re.sub(r"[,$]", "", plain).rstrip(".") or None


def _strict(sample: Mapping[str, Any]) -> Any:
    return sample["prediction"]["strict"]


def _logged(sample: Mapping[str, Any]) -> Any:
    return sample["prediction"]


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task on both harnesses.

    Choice tasks compare each document's scored (context, continuation) pairs and their
    log-likelihoods; generation tasks compare the prompt, the greedy generation and the answer
    extracted from it.
    """

    name: str  # our task name; also the row's
    kind: Literal["choice", "generation"]
    template: str  # lm_eval_tasks/<template>.yaml.tmpl
    limit: int  # default documents per subtask
    quick_limit: int  # the same under --quick
    our_metric: str  # the per-document score in our samples' "metrics"
    lm_eval_metric: str  # the same score in lm-eval's samples
    subtasks: tuple[str, ...] = ()  # default subtasks; () for a task without any
    our_prefix: str = ""  # our subtask name = prefix + subtask ("mmlu_" + "anatomy")
    norm: bool = False  # choice: the prediction is the arg-max per character (acc_norm)
    lm_eval_filter: str = ""  # generation: the filter whose output is lm-eval's answer
    our_answer: Callable[[Mapping[str, Any]], Any] = _logged  # generation: our sample's answer
    normalise: Callable[[str | None], str | None] = plain_answer  # both answers, before comparing
    in_card: bool = True  # one of llama2_card's tasks (the whole-card row runs it)
    on_tiny: bool = False  # run on tiny-random-llama2 by default

    def lm_eval_task(self, subtask: str = "") -> str:
        """The lm-eval task name (``bench_`` keeps it apart from lm-eval's built-ins)."""
        return f"bench_{self.name}_{subtask}" if subtask else f"bench_{self.name}"

    def our_task(self, subtask: str = "") -> str:
        return self.our_prefix + subtask if subtask else self.name


SPECS: tuple[TaskSpec, ...] = (
    TaskSpec("mmlu", "choice", "mmlu_subject", 20, 3, "acc", "acc", MMLU_SUBJECTS, "mmlu_", on_tiny=True),
    TaskSpec("gsm8k", "generation", "gsm8k_cot", 30, 2, "exact_match_strict", "exact_match",
             lm_eval_filter="strict-match", our_answer=_strict, normalise=number_answer, on_tiny=True),
    TaskSpec("truthfulqa_mc2", "choice", "truthfulqa_mc2", 200, 5, "mc2", "acc", in_card=False),
    TaskSpec("hellaswag", "choice", "hellaswag", 100, 3, "acc_norm", "acc_norm", norm=True),
    TaskSpec("arc_challenge", "choice", "arc", 100, 3, "acc_norm", "acc_norm", norm=True),
    TaskSpec("arc_easy", "choice", "arc", 100, 3, "acc_norm", "acc_norm", norm=True),
    TaskSpec("winogrande", "choice", "winogrande", 100, 3, "acc", "acc"),
    TaskSpec("boolq", "choice", "boolq", 50, 3, "acc", "acc"),
    TaskSpec("triviaqa", "generation", "triviaqa", 50, 2, "exact_match", "exact_match",
             lm_eval_filter="remove_whitespace"),
    TaskSpec("bbh", "generation", "bbh_cot", 30, 2, "exact_match", "exact_match", ("sports_understanding",),
             "bbh_", lm_eval_filter="get-answer"),
)  # fmt: skip
BY_NAME: dict[str, TaskSpec] = {spec.name: spec for spec in SPECS}
# The rows run by default: arc_easy is there for the whole-card row (and --tasks arc_easy).
DEFAULT_ROWS = ("mmlu", "gsm8k", "truthfulqa_mc2", "hellaswag", "arc_challenge", "winogrande", "boolq", "triviaqa", "bbh")


@dataclass(frozen=True)
class Part:
    """A task with the subtasks chosen for a run."""

    spec: TaskSpec
    subtasks: tuple[str, ...] = ()

    @property
    def our_tasks(self) -> list[str]:
        return [self.spec.our_task(s) for s in self.subtasks] or [self.spec.name]

    @property
    def lm_eval_tasks(self) -> list[str]:
        return [self.spec.lm_eval_task(s) for s in self.subtasks] or [self.spec.lm_eval_task()]

    def lm_eval_keys(self) -> dict[str, str]:
        """lm-eval task name -> our subtask name: the first half of a document's key in both."""
        return dict(zip(self.lm_eval_tasks, self.our_tasks, strict=True))


def spec(name: str) -> TaskSpec:
    """The spec of a task named on the command line (a clear error for an unknown one)."""
    if name not in BY_NAME:
        raise SystemExit(f"bench.py: unknown task {name!r}; known: {', '.join(BY_NAME)}")
    return BY_NAME[name]
