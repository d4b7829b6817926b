"""The run as data: results.json's content and samples.jsonl's lines (schema in the README)."""

from __future__ import annotations

import logging
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.backends.protocol import Backend
from evalharness.core import provenance
from evalharness.core.averages import MetricValue
from evalharness.core.prompt_render import PromptRenderer
from evalharness.core.requests import GenerateResponse, Response
from evalharness.core.task import Finalized, Outcome, Task
from evalharness.data.source import DataSource
from evalharness.run.planning import PlannedDoc
from evalharness.run.results_files import SCHEMA_VERSION, metrics_to_dict
from evalharness.run.settings import ModelSpec, RunConfig

log = logging.getLogger(__name__)


def _full_text(config: RunConfig, item: PlannedDoc, got: Sequence[Response]) -> dict[str, Any]:
    """return_full_text=true logs prompt + response beside the output; scoring never sees it."""
    if not config.overrides_for(item.selection.task.name).get("return_full_text"):
        return {}
    texts = [item.prompt.text + r.text for r in got if isinstance(r, GenerateResponse)]
    return {"full_text": texts[0] if len(texts) == 1 else texts} if texts else {}


def sample_line(config: RunConfig, item: PlannedDoc, got: Sequence[Response], outcome: Outcome) -> dict[str, Any]:
    return {
        "task": item.selection.task.name,
        "subtask": item.doc.subtask,
        "doc_id": item.doc.doc_id,
        "prompt_hash": item.prompt.sha256,
        "fewshot_ids": list(item.prompt.shots),
        **({"prompt": item.prompt.text} if config.log_prompts else {}),
        "output": outcome.output,
        **_full_text(config, item, got),
        "prediction": outcome.prediction,
        "gold": outcome.gold,
        "metrics": dict(outcome.metrics),
        **dict(outcome.extra),
    }


def _with_direction(task: Task, metrics: Mapping[str, MetricValue]) -> dict[str, dict[str, Any]]:
    """Each metric as a dict, with whether it improves upwards (the gate and report read it)."""
    return {
        name: {**value, "higher_is_better": task.higher_is_better(name)}
        for name, value in metrics_to_dict(metrics).items()
    }


def task_entry(
    config: RunConfig, task: Task, outcomes: Mapping[str, Sequence[Outcome]], final: Finalized, cut: tuple[int, int]
) -> dict[str, Any]:
    result = task.aggregate(outcomes)
    if cut[0]:
        log.warning(
            "%s: %d prompt(s) exceeded the model's context and were left-truncated (%d into the document itself)",
            task.name, cut[0], cut[1],
        )  # fmt: skip
    return {
        **task.config(),
        **final.provenance,
        **result.details,
        "num_fewshot": task.default_fewshot if config.num_fewshot is None else config.num_fewshot,
        "n": sum(len(v) for v in outcomes.values()),
        "metrics": _with_direction(task, result.metrics),
        "groups": {g: _with_direction(task, m) for g, m in result.groups.items()},
        "subtasks": {s: _with_direction(task, m) for s, m in result.subtasks.items()},
        **({"all_subtasks": task.subtasks()} if len(task.subtasks()) > 1 else {}),
        "truncated_documents": cut[0],
        "truncated_into_document": cut[1],
    }


def build_results(
    config: RunConfig,
    model: ModelSpec,
    planned: Sequence[PlannedDoc],
    responses: Sequence[Sequence[Response]],
    scored: Sequence[Outcome],
    finalized: Mapping[str, Finalized],
    backend: Backend,
    data: DataSource,
    renderer: PromptRenderer,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    outcomes: dict[str, dict[str, list[Outcome]]] = {}
    truncated: dict[str, list[int]] = {}
    samples = []
    for item, got, outcome in zip(planned, responses, scored, strict=False):
        name = item.selection.task.name
        outcomes.setdefault(name, {}).setdefault(item.doc.subtask, []).append(outcome)
        counts = truncated.setdefault(name, [0, 0])
        counts[0] += any(r.truncated for r in got)
        counts[1] += any(r.truncated_document for r in got)
        samples.append(sample_line(config, item, got, outcome))
    tasks: dict[str, Any] = {}
    for selection in {p.selection.task.name: p.selection for p in planned}.values():
        task = selection.task
        cut = truncated.get(task.name, [0, 0])
        tasks[task.name] = task_entry(config, task, outcomes.get(task.name, {}), finalized[task.name], (cut[0], cut[1]))
    results = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": shlex.join(sys.argv),
        "harness": provenance.harness_version(),
        "config": config.to_record(model),
        "model": backend.fingerprint(),
        "tasks": tasks,
        "templates": dict(sorted(renderer.template_hashes.items())),
        "seeds": {"python": config.seed, "numpy": config.seed, "torch": config.seed, "fewshot": config.seed},
        "data": {"root": str(data.root) if data.root else "hub", "files": dict(sorted(data.identity.items()))},
        "libraries": provenance.library_versions(),
        "host": provenance.host(),
    }
    return results, samples
