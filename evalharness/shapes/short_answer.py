"""Short-answer generation: generate, extract, normalise, compare — written once.

A task declares its stop strings, its ``extractors`` (name → function pulling the answer out of
a generation: the last number, "The answer is N", ``\\boxed{}``, the first line) and its
``comparisons`` (metric → function of the extracted answer and the reference aliases: numeric
equality, normalised exact match, SQuAD token F1). Each metric is reported per extractor
(``exact_match_strict``, ``exact_match_flexible``), or under its own name with one unnamed
extractor. With ``--task-args samples=k`` the majority answer over k samples is scored (maj@k),
and ``pass_at=K`` adds the unbiased pass@K estimate (Chen et al., 2021) over the k samples.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from evalharness.core.errors import EvalHarnessError
from evalharness.core.requests import Response
from evalharness.core.task import Doc, Outcome
from evalharness.shapes.answer_extraction import exact_match, first_line
from evalharness.shapes.generating import GeneratingTask, generations, option_int

Extractor = Callable[[str], "str | None"]
Comparison = Callable[["str | None", Sequence[str]], float]


def majority(answers: Sequence[str | None]) -> str | None:
    """Most common extracted answer; ties go to the earliest sample (so k=1 is the sample)."""
    counted = Counter(a for a in answers if a is not None)
    if not counted:
        return None
    best = max(counted.values())
    return next(a for a in answers if a is not None and counted[a] == best)


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased pass@k from n samples of which ``correct`` pass: 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - correct < k:
        return 1.0
    return 1.0 - math.prod((n - correct - i) / (n - i) for i in range(k))


class ShortAnswer(GeneratingTask):
    stop: ClassVar[tuple[str, ...]] = ("\n",)
    extractors: ClassVar[Mapping[str, Extractor]] = {"": first_line}
    comparisons: ClassVar[Mapping[str, Comparison]] = {"exact_match": exact_match}
    defaults: ClassVar[Mapping[str, Any]] = {"samples": 1, "max_new_tokens": 256, "pass_at": 0}

    def check_options(self) -> None:
        super().check_options()
        k = option_int(self, "pass_at", minimum=0)
        if k > option_int(self, "samples"):
            raise EvalHarnessError(f"{self.name}: --task-args pass_at={k} needs samples >= {k}")

    def references(self, doc: Doc) -> Sequence[str]:
        """The accepted answers (aliases); default the single ``answer`` field."""
        return [str(doc.fields["answer"])]

    def target(self, doc: Doc) -> str:
        """A few-shot example's answer: its first reference."""
        return self.references(doc)[0]

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        texts = [r.text for r in generations(responses)]
        references = self.references(doc)
        pass_at = option_int(self, "pass_at", minimum=0)
        metrics: dict[str, float] = {}
        extracted: dict[str, list[str | None]] = {}
        votes: dict[str, str | None] = {}
        for name, extract in self.extractors.items():
            answers = [extract(t) for t in texts]
            extracted[name], votes[name] = answers, majority(answers)
            for metric, compare in self.comparisons.items():
                key = f"{metric}_{name}" if name else metric
                metrics[key] = compare(votes[name], references)
                if pass_at:
                    correct = sum(compare(a, references) == 1.0 for a in answers)
                    metrics[f"{key}_pass@{pass_at}"] = pass_at_k(len(answers), correct, pass_at)
        named = list(self.extractors) != [""]
        return Outcome(
            output=texts[0] if len(texts) == 1 else texts,
            prediction=votes if named else votes[""],
            gold=references[0] if len(references) == 1 else list(references),
            metrics=metrics,
            extra={"extracted": extracted} if named else {},
        )


class ClosedBookQA(ShortAnswer):
    """The Llama papers' closed-book QA (NaturalQuestions, TriviaQA): "Answer these questions:",
    then one "Q: …\\nA: …" per line, greedy until a newline, exact match over the aliases."""

    default_fewshot: ClassVar[int] = 5
    fewshot_delimiter: ClassVar[str] = "\n"
    stop: ClassVar[tuple[str, ...]] = ("\n",)
    defaults: ClassVar[Mapping[str, Any]] = {"samples": 1, "max_new_tokens": 32, "pass_at": 0}

    def description(self, subtask: str) -> str:
        return "Answer these questions:\n"
