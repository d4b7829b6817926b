"""The task protocol: documents → few-shot prompts → requests → per-document scores → result.

A benchmark is declared, not programmed: it subclasses one of the shared shapes in
``evalharness.shapes`` (multiple choice, short answer, scored generation, summarisation),
declares its data (``dataset``, ``fewshot``) and its template, and maps a record to a ``Doc``.
Tasks hold no state between calls: everything a later step needs travels in the values
(``Outcome``, ``Finalized``, ``TaskResult``) that each step returns.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from evalharness.core.averages import MetricValue, group_means, per_document_metrics
from evalharness.core.errors import DataError, EvalHarnessError, UnknownNameError
from evalharness.core.registry import Registry
from evalharness.core.requests import Request, Response
from evalharness.data.datasets import Dataset, Fewshot
from evalharness.data.source import DataSource

if TYPE_CHECKING:
    from evalharness.backends.protocol import Backend


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

    @property
    def fewshot_text(self) -> str:
        """Everything before the document: description and answered examples."""
        return self.text[: len(self.text) - self.document_chars]

    def last_block_chars(self, start: str) -> int:
        """Length of the prompt's last block (text after a blank line) that begins with ``start``,
        at most the document; the whole document when there is none.

        For a fixed primer rendered into the document (TruthfulQA's "Q: …\nA:" pairs): only the
        test item's block is protected, so the primer may be cut from the left when a model's
        context is too short for the whole prompt.
        """
        begins = self.text.rfind("\n\n" + start)
        return self.document_chars if begins < 0 else min(len(self.text) - begins - 2, self.document_chars)


@dataclass(frozen=True)
class Outcome:
    """A scored document: what the model output, what it predicted, and per-document metrics."""

    output: Any
    prediction: Any
    gold: Any
    metrics: Mapping[str, float]
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finalized:
    """The outcome of a task's second pass, and how it was scored (which judge, classifier…)."""

    outcomes: list[Outcome]
    provenance: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskResult:
    """A task's aggregated results, as results.json records them."""

    metrics: Mapping[str, MetricValue]
    subtasks: Mapping[str, Mapping[str, MetricValue]] = field(default_factory=dict)
    groups: Mapping[str, Mapping[str, MetricValue]] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)  # extra facts for results.json


@dataclass(frozen=True)
class TaskContext:
    """Run settings a task's second pass may need, and the way to obtain another model."""

    device: str
    dtype: str
    batch_size: int | str
    seed: int
    data_dir: str | None

    def load_model(self, name: str) -> Backend:
        """A judge or helper model, through the backend layer (the local backend, this run's
        device, dtype and batch size)."""
        from evalharness.backends.registry import build_backend

        return build_backend(
            "hf", name, {"device": self.device, "dtype": self.dtype, "batch_size": self.batch_size}
        )


class Task(ABC):
    name: ClassVar[str]
    version: ClassVar[str]
    # Instance-overridable: an option may pick another template or data (a revision, a variant).
    template: str  # path under prompts/
    dataset: Dataset | None = None  # where the documents come from
    fewshot: Fewshot | None = None  # where the answered examples come from
    default_fewshot: ClassVar[int] = 0
    target_delimiter: ClassVar[str] = " "
    fewshot_delimiter: ClassVar[str] = "\n\n"
    defaults: ClassVar[Mapping[str, Any]] = {}  # task options settable with --task-args
    lower_is_better: ClassVar[frozenset[str]] = frozenset()  # metrics that improve downwards

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise UnknownNameError(f"task {self.name} has no option {', '.join(unknown)}")
        self.options: dict[str, Any] = {**self.defaults, **options}

    # -- documents -------------------------------------------------------------------------

    def subtasks(self) -> list[str]:
        return [self.name]

    def subset(self, subtask: str) -> str | None:
        """The dataset configuration a subtask reads (MMLU: its subject); None for one set."""
        return None

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        """A dataset record (in the hub's schema) as the fields the template and scorer use."""
        return record

    def documents(self, data: DataSource, subtask: str) -> list[Doc]:
        if self.dataset is None:
            raise NotImplementedError(f"{self.name} declares no dataset")
        split, subset = self.dataset.split, self.subset(subtask)
        return self._docs(self.dataset.records(data, split, subset), subtask, self.dataset.where(data, split, subset))

    def fewshot_pool(self, data: DataSource, subtask: str) -> list[Doc]:
        if self.fewshot is None:
            return []
        source = self.fewshot.dataset or self.dataset
        if source is None:
            return []
        split, subset = self.fewshot.split, self.subset(subtask)
        return self._docs(source.records(data, split, subset), subtask, source.where(data, split, subset))

    def _docs(self, records: Sequence[Mapping[str, Any]], subtask: str, where: str) -> list[Doc]:
        docs = []
        for i, record in enumerate(records):
            try:
                docs.append(Doc(subtask, i, self.record_to_doc(record)))
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                raise DataError(f"{where}, record {i + 1}: {detail}") from None
        return docs

    def preflight(self, data: DataSource) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Checks that must fail before the model loads (a judge model, a metric package)."""

    def select_fewshot(self, pool: Sequence[Doc], k: int, doc: Doc, seed: int) -> list[Doc]:
        if k > len(pool):
            raise EvalHarnessError(f"{doc.subtask}: {k} few-shot examples asked for, the pool has {len(pool)}")
        sampling = self.fewshot.sampling if self.fewshot is not None else "first_n"
        if sampling == "first_n":
            return list(pool[:k])
        # Seeded per document, so a document's shots do not depend on which others ran.
        rng = random.Random(f"{seed}:{doc.subtask}:{doc.doc_id}")
        return rng.sample([d for d in pool if d is not doc], k)

    # -- prompts and requests --------------------------------------------------------------

    def description(self, subtask: str) -> str:
        return ""

    def template_vars(self, doc: Doc) -> Mapping[str, Any]:
        return doc.fields

    @abstractmethod
    def target(self, doc: Doc) -> str:
        """The answer text that follows a few-shot example."""

    @abstractmethod
    def requests(self, doc: Doc, prompt: Prompt) -> list[Request]: ...

    # -- scoring ---------------------------------------------------------------------------

    @abstractmethod
    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome: ...

    def finalize(self, scored: Sequence[tuple[Doc, Outcome]], context: TaskContext) -> Finalized:
        """A second pass over all of the task's scored documents; the default keeps them.

        Shapes whose scores need another model or program (a judge, a classifier, a sandbox)
        override this to run it once, batched, over every document.
        """
        return Finalized([outcome for _, outcome in scored])

    def aggregate(self, outcomes: Mapping[str, Sequence[Outcome]]) -> TaskResult:
        """Default: metrics pooled over every document, and per subtask."""
        pooled = per_document_metrics(o.metrics for docs in outcomes.values() for o in docs)
        return TaskResult(pooled, per_subtask(outcomes))

    def higher_is_better(self, metric: str) -> bool:
        return metric not in self.lower_is_better

    def config(self) -> dict[str, Any]:
        """Task settings recorded in results.json (a function of the options alone)."""
        return {
            "version": self.version,
            "template": self.template,
            "default_fewshot": self.default_fewshot,
            "fewshot_sampling": self.fewshot.sampling if self.fewshot is not None else "first_n",
            **({"fewshot_note": self.fewshot.note} if self.fewshot is not None and self.fewshot.note else {}),
            "options": dict(self.options),
        }


def per_subtask(outcomes: Mapping[str, Sequence[Outcome]]) -> dict[str, dict[str, MetricValue]]:
    """Each subtask's metrics, when a task ran more than one (one subtask is the task itself)."""
    if len(outcomes) < 2:
        return {}
    return {name: per_document_metrics(o.metrics for o in docs) for name, docs in outcomes.items()}


def aggregate_groups(
    outcomes: Mapping[str, Sequence[Outcome]], metric: str, group_of: Callable[[str], str], order: Sequence[str]
) -> TaskResult:
    """``metric`` per group of subtasks (``group_of`` names a subtask's group), ``{metric}_mean_of_groups``
    (the unweighted mean of the group means) and ``{metric}_pooled`` (over every document).

    For per-group percentages such as ToxiGen's % toxic per demographic group: groups are reported
    in ``order`` (those that ran), each pooling all of its subtasks' documents.
    """
    values: dict[str, list[float]] = {}
    for subtask, docs in outcomes.items():
        values.setdefault(group_of(subtask), []).extend(o.metrics[metric] for o in docs)
    means = group_means({key: values[key] for key in order if key in values})
    metrics = {f"{metric}_mean_of_groups": means.mean_of_groups, f"{metric}_pooled": means.pooled}
    return TaskResult(metrics, per_subtask(outcomes), {key: {metric: value} for key, value in means.groups.items()})


TASKS: Registry[type[Task]] = Registry("task", hint="`evalharness tasks` lists them")


def register_task(cls: type[Task]) -> type[Task]:
    TASKS.register(cls.name)(cls)
    return cls
