"""evaluate(): task → prompt → requests → backend (+ cache) → score → aggregate → results."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalharness.backends.caching import CachingBackend
from evalharness.backends.protocol import Backend, ChatFormatting, RequestLimits
from evalharness.backends.registry import BACKENDS, build_backend, split_model
from evalharness.backends.response_cache import ResponseCache
from evalharness.core.errors import EvalHarnessError, UnknownNameError
from evalharness.core.prompt_render import PromptRenderer
from evalharness.core.registry import did_you_mean
from evalharness.core.requests import GenerateRequest, LoglikelihoodRequest, Response
from evalharness.core.task import Finalized, Outcome, TaskContext
from evalharness.data.source import DataSource
from evalharness.run.planning import PlannedDoc, plan, wrap_for_chat
from evalharness.run.record import build_results
from evalharness.run.results_files import check_output_dir, format_table, write_run
from evalharness.run.settings import ModelSpec, RunConfig

log = logging.getLogger(__name__)


@dataclass
class EvalResults:
    results: dict[str, Any]
    samples: list[dict[str, Any]]

    def table(self) -> str:
        return format_table(self.results)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_requests(backend: Backend, planned: Sequence[PlannedDoc]) -> None:
    """A request the backend cannot answer (log-likelihood from an endpoint without
    log-probabilities) fails the run here, before any request is sent."""
    if isinstance(backend, RequestLimits):
        for item in planned:
            for request in item.requests:
                if why := backend.refusal(item.selection.task.name, request):
                    raise EvalHarnessError(why)


def run_requests(backend: Backend, planned: Sequence[PlannedDoc]) -> list[list[Response]]:
    """All requests of one kind go to the backend in one call, so it can batch across tasks."""
    flat = [(i, r) for i, p in enumerate(planned) for r in p.requests]
    responses: list[list[Response]] = [[] for _ in planned]
    lls = [(i, r) for i, r in flat if isinstance(r, LoglikelihoodRequest)]
    if lls:
        for (i, _), got in zip(lls, backend.loglikelihood([r for _, r in lls]), strict=False):
            responses[i].append(got)
    gens = [(i, r) for i, r in flat if isinstance(r, GenerateRequest)]
    if gens:
        for (i, _), made in zip(gens, backend.generate([r for _, r in gens]), strict=False):
            responses[i].append(made)
    return responses


def score_all(
    config: RunConfig, model: ModelSpec, planned: Sequence[PlannedDoc], responses: Sequence[Sequence[Response]]
) -> tuple[list[Outcome], dict[str, Finalized]]:
    """Per-document scores, then each task's second pass over all of its documents at once
    (where judge models and classifiers run, batched)."""
    scored = [item.selection.task.score(item.doc, got) for item, got in zip(planned, responses, strict=False)]
    options = model.options
    context = TaskContext(
        str(options.get("device", "auto")), str(options.get("dtype", "auto")),
        options.get("batch_size") or 8, config.seed, config.data_dir,
    )  # fmt: skip
    by_task: dict[str, list[int]] = {}
    for index, item in enumerate(planned):
        by_task.setdefault(item.selection.task.name, []).append(index)
    finalized: dict[str, Finalized] = {}
    for name, indices in by_task.items():
        task = planned[indices[0]].selection.task
        final = task.finalize([(planned[i].doc, scored[i]) for i in indices], context)
        if len(final.outcomes) != len(indices):
            raise RuntimeError(f"{task.name}.finalize returned {len(final.outcomes)} outcomes for {len(indices)}")
        for i, outcome in zip(indices, final.outcomes, strict=False):
            scored[i] = outcome
        finalized[name] = final
    return scored, finalized


BACKEND_SETTINGS = ("batch_size", "device", "dtype", "model_args", "max_length", "trust_remote_code")


def evaluate(model: str | Backend, tasks: Sequence[str] | str, **options: Any) -> EvalResults:
    """Python API: ``evaluate(model="path/or/hub-id", tasks=["mmlu"], limit=2)``.

    ``model`` may also be an already-built backend. Options are ``RunConfig``'s fields and the
    backend's settings (``device``, ``dtype``, ``batch_size``, … for the local backend;
    ``backend="name"`` picks another).
    """
    task_names = tuple(tasks.split(",")) if isinstance(tasks, str) else tuple(tasks)
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    backend_name = options.pop("backend", None)
    run_options = {k: v for k, v in options.items() if k in run_fields}
    model_options = {k: v for k, v in options.items() if k not in run_fields}
    config = RunConfig(tasks=task_names, **run_options)
    if isinstance(model, str):
        name, model_id = split_model(model, backend_name)
        known = sorted(run_fields | BACKENDS.get(name).options)
        for key in model_options:
            if key not in BACKENDS.get(name).options:
                raise UnknownNameError(f"evaluate(): unknown option {key!r}{did_you_mean(key, known)}")
        return run(config, ModelSpec(model_id, name, model_options))
    fingerprint = model.fingerprint()
    spec = ModelSpec(str(fingerprint.get("model", "?")), str(fingerprint.get("backend", "?")), model_options)
    return run(config, spec, model)


def run(config: RunConfig, model: ModelSpec, backend: Backend | None = None) -> EvalResults:
    started = time.time()
    if config.output_dir:
        check_output_dir(config.output_dir)  # an unwritable --output fails before any work
    seed_everything(config.seed)
    data = DataSource(config.data_dir)
    renderer = PromptRenderer(config.prompt_dir)
    planned = plan(config, data, renderer)  # bad tasks or data fail here, before the model loads
    if backend is None:
        backend = build_backend(model.backend, model.model, model.options)
    if config.apply_chat_template:
        tokenizer = backend.chat_tokenizer() if isinstance(backend, ChatFormatting) else None
        planned = wrap_for_chat(planned, tokenizer, renderer)
    check_requests(backend, planned)
    cached = CachingBackend(backend, ResponseCache(config.cache_path, backend.fingerprint())) if config.cache_path else None
    try:
        responses = run_requests(cached or backend, planned)
    finally:
        if cached is not None:
            cached.close()
    outcomes, finalized = score_all(config, model, planned, responses)
    results, samples = build_results(config, model, planned, responses, outcomes, finalized, backend, data, renderer)
    if cached is not None:
        results["cache"] = cached.stats()
    results["wall_time_s"] = round(time.time() - started, 3)
    if config.output_dir:
        write_run(Path(config.output_dir), results, samples)
        log.info("wrote %s", Path(config.output_dir) / "results.json")
    return EvalResults(results, samples)
