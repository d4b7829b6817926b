"""The scorer protocol: generations judged by another model or program, once, batched.

TruthfulQA's judge models, ToxiGen's classifiers and (for code) a sandbox all implement it.
A scorer runs after every generation of a task is in, and says what it is as data
(``describe``: which judge or classifier, whether it only approximates the card), so
results.json and the report can label a number without knowing the scorer's code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from evalharness.core.task import Doc, TaskContext


@dataclass(frozen=True)
class Judgement:
    """One generation's scores; ``prediction`` replaces the shape's (None keeps it)."""

    metrics: Mapping[str, float]
    prediction: Any = None
    details: Mapping[str, Any] = field(default_factory=dict)  # logged in samples.jsonl


@dataclass(frozen=True)
class Judgements:
    items: list[Judgement]
    provenance: Mapping[str, Any] = field(default_factory=dict)  # merged into results.json


class Scorer(Protocol):
    def check(self) -> None:
        """Fail fast, before any generation, when the scorer cannot run (cheap: no weights)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the scorer is, without running it: name, approximate, settings."""
        ...

    def judge(self, docs: Sequence[Doc], answers: Sequence[str], context: TaskContext) -> Judgements:
        """Scores for every answer, in order."""
        ...
