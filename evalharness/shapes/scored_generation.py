"""Generation scored by another model or program (a judge, a classifier, a sandbox).

The task generates; its ``scorer`` runs once over all of the task's answers, batched, in the
second pass (``finalize``), and its provenance lands in results.json beside the metrics.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from evalharness.core.errors import EvalHarnessError
from evalharness.core.requests import Response
from evalharness.core.task import Doc, Finalized, Outcome, TaskContext
from evalharness.data.source import DataSource
from evalharness.scoring.scorer import Scorer
from evalharness.shapes.generating import GeneratingTask, generations


def prompt_counts(
    scored: Sequence[tuple[Doc, Outcome]], source_of: Callable[[str], str], field: str = "prompt"
) -> dict[str, dict[str, Any]]:
    """Per subtask, for results.json: the file its prompts come from (``source_of``), how many
    ran and how many of those (``doc.fields[field]``) are distinct (prompt files may repeat lines)."""
    prompts: dict[str, list[str]] = {}
    for doc, _ in scored:
        prompts.setdefault(doc.subtask, []).append(doc.fields[field])
    return {name: {"file": source_of(name), "n": len(p), "unique": len(set(p))} for name, p in prompts.items()}


class ScoredGeneration(GeneratingTask):
    @abstractmethod
    def scorer(self, data_dir: str | None) -> Scorer:
        """The scorer the options select (built afresh each time: tasks keep no state)."""

    def answer(self, doc: Doc, text: str) -> str:
        """What the scorer reads of a generation (default: stripped)."""
        return text.strip()

    def gold(self, doc: Doc) -> Any:
        return None

    def preflight(self, data: DataSource) -> None:
        self.scorer(str(data.root) if data.root else None).check()

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        (response,) = generations(responses)
        return Outcome(
            output=response.text,
            prediction=self.answer(doc, response.text),
            gold=self.gold(doc),
            metrics={},
            extra={**self.details(doc), "finish_reason": response.finish_reason},
        )

    def details(self, doc: Doc) -> dict[str, Any]:
        """Per-document facts worth logging beside the generation."""
        return {}

    def finalize(self, scored: Sequence[tuple[Doc, Outcome]], context: TaskContext) -> Finalized:
        if not scored:
            return Finalized([])
        scorer = self.scorer(context.data_dir)
        judged = scorer.judge([doc for doc, _ in scored], [str(o.prediction) for _, o in scored], context)
        if len(judged.items) != len(scored):
            raise EvalHarnessError(f"{self.name}: the scorer returned {len(judged.items)} scores for {len(scored)}")
        outcomes = [
            dataclasses.replace(
                outcome,
                prediction=outcome.prediction if j.prediction is None else j.prediction,
                metrics=dict(j.metrics),
                extra={**outcome.extra, **j.details},
            )
            for (_, outcome), j in zip(scored, judged.items, strict=False)
        ]
        return Finalized(outcomes, {**scorer.describe(), **judged.provenance})

    def config(self) -> dict[str, Any]:
        return {**super().config(), **self.scorer(None).describe()}
