"""The task protocol: documents → few-shot prompts → requests → per-document scores → aggregate.

A task module subclasses ``Task`` and registers itself with ``@register_task``; it should read
like the paper's description of the benchmark.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evalharness.data.source import DataSource
from evalharness.core.averages import MetricValue, per_document_metrics
from evalharness.core.registry import Registry
from evalharness.core.requests import Request, Response


@dataclass(frozen=True)
class Doc:
    """One benchmark item. ``doc_id`` is its index in the source split, stable across runs."""

    subtask: str
    doc_id: int
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class Prompt:
    text: str
    document_chars: int  # the tail of ``text`` that is the document itself, never truncated
    sha256: str
    shots: tuple[int, ...]  # doc_ids of the few-shot examples


@dataclass(frozen=True)
class Outcome:
    """A scored document: what the model output, what it predicted, and per-document metrics."""

    output: Any
    prediction: Any
    gold: Any
    metrics: Mapping[str, float]
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Aggregate:
    """A task's metrics, its subtasks' metrics, and anything else worth reporting."""

    metrics: dict[str, MetricValue]
    subtasks: dict[str, dict[str, MetricValue]] = field(default_factory=dict)
    groups: dict[str, dict[str, MetricValue]] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskContext:
    """Run settings a task's ``finalize`` may need to load its own judge or classifier."""

    device: str
    dtype: str
    batch_size: int | str
    seed: int
    data_dir: str | None


class Task(ABC):
    name: ClassVar[str]
    version: ClassVar[str]
    template: ClassVar[str]  # path under prompts/
    default_fewshot: ClassVar[int] = 0
    fewshot_sampling: ClassVar[str] = "first_n"  # or "seeded"
    target_delimiter: ClassVar[str] = " "
    fewshot_delimiter: ClassVar[str] = "\n\n"
    defaults: ClassVar[Mapping[str, Any]] = {}  # task options settable with --task-args

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            from evalharness.core.errors import UnknownNameError

            raise UnknownNameError(f"task {self.name} has no option {', '.join(unknown)}")
        self.options: dict[str, Any] = {**self.defaults, **options}

    def subtasks(self) -> list[str]:
        return [self.name]

    @abstractmethod
    def documents(self, data: DataSource, subtask: str) -> list[Doc]: ...

    def fewshot_pool(self, data: DataSource, subtask: str) -> list[Doc]:
        return []

    def select_fewshot(self, pool: Sequence[Doc], k: int, doc: Doc, seed: int) -> list[Doc]:
        if k > len(pool):
            from evalharness.core.errors import EvalHarnessError

            raise EvalHarnessError(
                f"{doc.subtask}: {k} few-shot examples asked for, the pool has {len(pool)}"
            )
        if self.fewshot_sampling == "first_n":
            return list(pool[:k])
        # Seeded per document, so a document's shots do not depend on which others ran.
        rng = random.Random(f"{seed}:{doc.subtask}:{doc.doc_id}")
        return rng.sample([d for d in pool if d is not doc], k)

    def description(self, subtask: str) -> str:
        return ""

    def template_vars(self, doc: Doc) -> Mapping[str, Any]:
        return doc.fields

    @abstractmethod
    def target(self, doc: Doc) -> str:
        """The answer text that follows a few-shot example."""

    @abstractmethod
    def requests(self, doc: Doc, prompt: Prompt) -> list[Request]: ...

    @abstractmethod
    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome: ...

    def finalize(
        self, scored: Sequence[tuple[Doc, Outcome]], context: TaskContext
    ) -> list[Outcome]:
        """A second pass over all of the task's scored documents; the default keeps them.

        Tasks whose scores need another model (a truthfulness judge, a toxicity classifier)
        override this to run it once, batched, over every document.
        """
        return [outcome for _, outcome in scored]

    def aggregate(self, outcomes: Mapping[str, Sequence[Outcome]]) -> Aggregate:
        """Default: metrics pooled over every document, and per subtask."""
        pooled = per_document_metrics(o.metrics for docs in outcomes.values() for o in docs)
        per_subtask = (
            {name: per_document_metrics(o.metrics for o in docs) for name, docs in outcomes.items()}
            if len(outcomes) > 1
            else {}
        )
        return Aggregate(pooled, per_subtask)

    def config(self) -> dict[str, Any]:
        """Task settings recorded in results.json."""
        return {
            "version": self.version,
            "template": self.template,
            "default_fewshot": self.default_fewshot,
            "fewshot_sampling": self.fewshot_sampling,
            "options": dict(self.options),
        }


TASKS: Registry[type[Task]] = Registry("task", hint="`evalharness tasks` lists them")


def register_task(cls: type[Task]) -> type[Task]:
    return TASKS.register(cls.name)(cls)
