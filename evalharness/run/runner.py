"""evaluate(): task → prompt → requests → backend → score → aggregate → results."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalharness.core import provenance
from evalharness.backends.protocol import Backend
from evalharness.backends.response_cache import ResponseCache
from evalharness.data.source import DataSource
from evalharness.core.errors import EvalHarnessError, UnknownNameError
from evalharness.core.registry import did_you_mean
from evalharness.core.prompt_render import PromptRenderer, sha256_text
from evalharness.core.requests import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    Request,
    Response,
    SamplingParams,
)
from evalharness.run.results_files import SCHEMA_VERSION, check_output_dir, format_table, metrics_to_dict, write_run
from evalharness.core.task_selection import Selection, resolve
from evalharness.core.task import Doc, Outcome, Prompt, TaskContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    model: str
    tasks: tuple[str, ...]
    num_fewshot: int | None = None
    limit: int | None = None
    batch_size: int | str = 8
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 1234
    data_dir: str | None = None
    output_dir: str | None = None
    log_prompts: bool = True
    model_args: Mapping[str, Any] = field(default_factory=dict)
    gen_kwargs: Mapping[str, Any] = field(default_factory=dict)
    max_length: int | None = None
    task_args: Mapping[str, Any] = field(default_factory=dict)
    cache_path: str | None = None  # response cache (SQLite); None disables it
    prompt_dir: str | None = None  # user templates, searched before prompts/ (sandboxed)
    apply_chat_template: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not self.tasks:
            raise EvalHarnessError("no tasks given (--tasks)")
        if self.limit is not None and self.limit < 1:
            raise EvalHarnessError(f"--limit {self.limit}: must be a positive integer")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise EvalHarnessError(f"--num-fewshot {self.num_fewshot}: must be >= 0")
        if self.batch_size != "auto" and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise EvalHarnessError(f"--batch-size {self.batch_size}: must be >= 1")


@dataclass(frozen=True)
class PlannedDoc:
    selection: Selection
    doc: Doc
    prompt: Prompt
    requests: tuple[Request, ...]


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


def plan(config: RunConfig, data: DataSource, renderer: PromptRenderer) -> list[PlannedDoc]:
    overrides = sampling_overrides(config.gen_kwargs)
    planned = []
    for selection in resolve(config.tasks, config.task_args):
        task = selection.task
        shots = task.default_fewshot if config.num_fewshot is None else config.num_fewshot
        for subtask in selection.subtasks:
            docs = task.documents(data, subtask)[: config.limit]
            pool = task.fewshot_pool(data, subtask) if shots else []
            for doc in docs:
                prompt = renderer.build(task, doc, task.select_fewshot(pool, shots, doc, config.seed))
                requests = tuple(
                    _override(r, overrides, _request_seed(config.seed, doc, i))
                    for i, r in enumerate(task.requests(doc, prompt))
                )
                planned.append(PlannedDoc(selection, doc, prompt, requests))
    return planned


def _request_seed(seed: int, doc: Doc, index: int) -> int:
    """A sampled request's seed depends on the run seed and the document, never on its batch."""
    digest = hashlib.sha256(f"{seed}:{doc.subtask}:{doc.doc_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


GEN_KWARGS = {f.name for f in dataclasses.fields(SamplingParams)} | {"return_full_text"}


def sampling_overrides(gen_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """--gen-kwargs in the card's names, checked; a temperature above 0 implies sampling."""
    unknown = sorted(set(gen_kwargs) - GEN_KWARGS)
    if unknown:
        raise UnknownNameError(
            f"--gen-kwargs: unknown setting {unknown[0]!r}{did_you_mean(unknown[0], sorted(GEN_KWARGS))}"
        )
    overrides = {k: v for k, v in gen_kwargs.items() if k != "return_full_text"}
    if overrides.get("temperature", 0) > 0 and "do_sample" not in overrides:
        overrides["do_sample"] = True
    return overrides


def _override(request: Request, overrides: Mapping[str, Any], seed: int) -> Request:
    if not isinstance(request, GenerateRequest):
        return request
    try:
        sampling = dataclasses.replace(request.sampling, **{"seed": seed, **overrides})
    except (TypeError, ValueError) as exc:
        raise EvalHarnessError(f"--gen-kwargs: {exc}") from None
    return dataclasses.replace(request, sampling=sampling)


def run_requests(backend: Backend, planned: Sequence[PlannedDoc]) -> list[list[Response]]:
    """All requests of one kind go to the backend in one call, so it can batch across tasks."""
    flat = [(i, r) for i, p in enumerate(planned) for r in p.requests]
    responses: list[list[Response]] = [[] for _ in planned]
    for kind, method in ((LoglikelihoodRequest, backend.loglikelihood), (GenerateRequest, backend.generate)):
        chosen = [(i, r) for i, r in flat if isinstance(r, kind)]
        if chosen:
            for (i, _), response in zip(chosen, method([r for _, r in chosen])):
                responses[i].append(response)
    return responses


def evaluate(model: str | Backend, tasks: Sequence[str] | str, **options: Any) -> EvalResults:
    """Python API: ``evaluate(model="path/or/hub-id", tasks=["mmlu"], limit=2)``.

    ``model`` may also be an already-built backend. Options are ``RunConfig``'s fields.
    """
    task_names = tuple(tasks.split(",")) if isinstance(tasks, str) else tuple(tasks)
    name = model if isinstance(model, str) else getattr(model, "config", None) and model.config.name_or_path
    config = RunConfig(model=str(name), tasks=task_names, **options)
    backend = None if isinstance(model, str) else model
    return run(config, backend)


def _wrap_for_chat(planned: list[PlannedDoc], backend: Backend, renderer: PromptRenderer) -> list[PlannedDoc]:
    """Each prompt becomes one user turn; the document part stays protected from truncation."""
    from evalharness.core.chat_template import chat_wrapper

    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        raise EvalHarnessError("--apply-chat-template needs a backend with a tokenizer")
    wrapper = chat_wrapper(tokenizer, renderer)
    wrapped = []
    for item in planned:
        text = wrapper.wrap(item.prompt.text)
        prompt = dataclasses.replace(
            item.prompt, text=text, document_chars=item.prompt.document_chars + len(wrapper.after),
            sha256=sha256_text(text),
        )
        requests = tuple(
            dataclasses.replace(r, context=wrapper.wrap(r.context), protected_chars=r.protected_chars + len(wrapper.after))
            for r in item.requests
        )
        wrapped.append(dataclasses.replace(item, prompt=prompt, requests=requests))
    return wrapped


def _attach_cache(backend: Backend, path: str | None) -> ResponseCache | None:
    if path is None or not hasattr(backend, "cache"):
        return None
    cache = ResponseCache(path, backend.fingerprint())
    backend.cache = cache
    return cache


def run(config: RunConfig, backend: Backend | None = None) -> EvalResults:
    check_output_dir(config.output_dir)  # before plans or the model load: fail in seconds, not hours
    started = time.time()
    seed_everything(config.seed)
    data = DataSource(config.data_dir)
    renderer = PromptRenderer(config.prompt_dir)
    planned = plan(config, data, renderer)  # bad tasks or data fail here, before the model loads
    if backend is None:
        from evalharness.backends.hf import HFBackend
        from evalharness.backends.hf.loader import ModelConfig

        backend = HFBackend(
            ModelConfig(
                config.model, config.dtype, config.device,
                trust_remote_code=config.trust_remote_code, model_args=dict(config.model_args),
            ),
            batch_size=config.batch_size,
            max_length=config.max_length,
        )
    if config.apply_chat_template:
        planned = _wrap_for_chat(planned, backend, renderer)
    cache = _attach_cache(backend, config.cache_path)
    try:
        responses = run_requests(backend, planned)
    finally:
        if cache is not None:
            cache.close()
    results, samples = collect(config, planned, responses, backend, data, renderer)
    if cache is not None:
        results["cache"] = {"path": str(cache.path), "hits": cache.hits, "stored": cache.stored}
    results["wall_time_s"] = round(time.time() - started, 3)
    if config.output_dir:
        write_run(Path(config.output_dir), results, samples)
        log.info("wrote %s", Path(config.output_dir) / "results.json")
    return EvalResults(results, samples)


def _full_text(config: RunConfig, item: PlannedDoc, got: Sequence[Response]) -> dict[str, Any]:
    """return_full_text=true logs prompt + response beside the output; scoring never sees it."""
    if not config.gen_kwargs.get("return_full_text"):
        return {}
    texts = [item.prompt.text + r.text for r in got if isinstance(r, GenerateResponse)]
    return {"full_text": texts[0] if len(texts) == 1 else texts} if texts else {}


def score_all(
    config: RunConfig, planned: Sequence[PlannedDoc], responses: Sequence[Sequence[Response]]
) -> list[Outcome]:
    """Per-document scores, then each task's ``finalize`` over all of its documents at once
    (where judge models and classifiers run, batched)."""
    scored = [item.selection.task.score(item.doc, got) for item, got in zip(planned, responses)]
    context = TaskContext(config.device, config.dtype, config.batch_size, config.seed, config.data_dir)
    by_task: dict[str, list[int]] = {}
    for index, item in enumerate(planned):
        by_task.setdefault(item.selection.task.name, []).append(index)
    for indices in by_task.values():
        task = planned[indices[0]].selection.task
        final = task.finalize([(planned[i].doc, scored[i]) for i in indices], context)
        if len(final) != len(indices):
            raise RuntimeError(f"{task.name}.finalize returned {len(final)} outcomes for {len(indices)}")
        for i, outcome in zip(indices, final):
            scored[i] = outcome
    return scored


def collect(
    config: RunConfig,
    planned: Sequence[PlannedDoc],
    responses: Sequence[Sequence[Response]],
    backend: Backend,
    data: DataSource,
    renderer: PromptRenderer,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    scored = score_all(config, planned, responses)
    outcomes: dict[str, dict[str, list[Outcome]]] = {}
    truncated: dict[str, list[int]] = {}
    samples = []
    for item, got, outcome in zip(planned, responses, scored):
        task = item.selection.task
        outcomes.setdefault(task.name, {}).setdefault(item.doc.subtask, []).append(outcome)
        counts = truncated.setdefault(task.name, [0, 0])
        counts[0] += any(getattr(r, "truncated", False) for r in got)
        counts[1] += any(getattr(r, "truncated_document", False) for r in got)
        sample = {
            "task": task.name,
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
        samples.append(sample)

    tasks: dict[str, Any] = {}
    for selection in {p.selection.task.name: p.selection for p in planned}.values():
        task = selection.task
        aggregate = task.aggregate(outcomes.get(task.name, {}))
        cut, cut_doc = truncated.get(task.name, [0, 0])
        if cut:
            log.warning(
                "%s: %d prompt(s) exceeded the model's context and were left-truncated"
                " (%d into the document itself)", task.name, cut, cut_doc,
            )
        shots = task.default_fewshot if config.num_fewshot is None else config.num_fewshot
        tasks[task.name] = {
            **task.config(),
            "num_fewshot": shots,
            "n": sum(len(v) for v in outcomes.get(task.name, {}).values()),
            "metrics": metrics_to_dict(aggregate.metrics),
            "groups": {g: metrics_to_dict(m) for g, m in aggregate.groups.items()},
            "subtasks": {s: metrics_to_dict(m) for s, m in aggregate.subtasks.items()},
            "truncated_documents": cut,
            "truncated_into_document": cut_doc,
        }
    config_dict = {k: (dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, tuple) else v)
                   for k, v in dataclasses.asdict(config).items()}
    results = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": shlex.join(sys.argv),
        "harness": provenance.harness_version(),
        "config": config_dict,
        "model": backend.fingerprint(),
        "tasks": tasks,
        "templates": dict(sorted(renderer.template_hashes.items())),
        "seeds": {"python": config.seed, "numpy": config.seed, "torch": config.seed, "fewshot": config.seed},
        "data": {"root": str(data.root) if data.root else "hub", "files": dict(sorted(data.identity.items()))},
        "libraries": provenance.library_versions(),
        "host": provenance.host(),
    }
    return results, samples
