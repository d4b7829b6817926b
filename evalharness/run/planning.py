"""From task names to planned documents: prompts rendered, requests built, seeds derived.

Everything here runs before a model loads, so a bad task name, option, template or data file
fails in seconds, not after the weights are in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalharness.core.errors import EvalHarnessError, UnknownNameError
from evalharness.core.prompt_render import PromptRenderer, sha256_text
from evalharness.core.registry import did_you_mean
from evalharness.core.requests import ChatMessage, GenerateRequest, Request
from evalharness.core.task import Doc, Prompt
from evalharness.core.task_selection import Selection, resolve
from evalharness.data.source import DataSource
from evalharness.run.settings import SAMPLING_FIELDS, RunConfig, parse_gen_kwargs

if TYPE_CHECKING:
    from evalharness.core.chat_template import ChatWrapper


@dataclass(frozen=True)
class PlannedDoc:
    selection: Selection
    doc: Doc
    prompt: Prompt
    requests: tuple[Request, ...]


def request_seed(seed: int, doc: Doc, index: int) -> int:
    """A sampled request's seed depends on the run seed and the document, never on its batch."""
    digest = hashlib.sha256(f"{seed}:{doc.subtask}:{doc.doc_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def with_overrides(request: Request, overrides: Mapping[str, Any], seed: int) -> Request:
    """A generation request with its seed and the --gen-kwargs applied; a temperature above 0
    turns sampling on unless do_sample is given."""
    if not isinstance(request, GenerateRequest):
        return request
    settings = {k: v for k, v in overrides.items() if k in SAMPLING_FIELDS}
    if settings.get("temperature", 0) > 0 and "do_sample" not in settings:
        settings["do_sample"] = True
    try:
        sampling = dataclasses.replace(request.sampling, **{"seed": seed, **settings})
    except (TypeError, ValueError) as exc:
        raise EvalHarnessError(f"--gen-kwargs: {exc}") from None
    return dataclasses.replace(request, sampling=sampling)


def check_task_scopes(config: RunConfig, selections: Sequence[Selection]) -> None:
    """``--gen-kwargs task:key=value`` must name a selected task."""
    names = [s.task.name for s in selections]
    for scope in parse_gen_kwargs(config.gen_kwargs):
        if scope is not None and scope not in names:
            raise UnknownNameError(
                f"--gen-kwargs {scope}:…: {scope!r} is not a selected task{did_you_mean(scope, names)}"
            )


def plan(config: RunConfig, data: DataSource, renderer: PromptRenderer) -> list[PlannedDoc]:
    selections = resolve(config.tasks, config.task_args, data)
    check_task_scopes(config, selections)
    for selection in selections:
        selection.task.preflight(data)  # judges, classifiers, metric packages: before the model
    planned: list[PlannedDoc] = []
    for selection in selections:
        task = selection.task
        before = len(planned)
        overrides = config.overrides_for(task.name)
        shots = task.default_fewshot if config.num_fewshot is None else config.num_fewshot
        for subtask in selection.subtasks:
            docs = task.documents(data, subtask)[: config.limit]
            pool = task.fewshot_pool(data, subtask) if shots else []
            for doc in docs:
                prompt = renderer.build(task, doc, task.select_fewshot(pool, shots, doc, config.seed))
                requests = tuple(
                    with_overrides(r, overrides, request_seed(config.seed, doc, i))
                    for i, r in enumerate(task.requests(doc, prompt))
                )
                planned.append(PlannedDoc(selection, doc, prompt, requests))
        if len(planned) == before:
            raise EvalHarnessError(f"{task.name}: no documents to evaluate (is its data file empty?)")
    return planned


def wrap_for_chat(planned: list[PlannedDoc], tokenizer: Any, renderer: PromptRenderer) -> list[PlannedDoc]:
    """Each prompt becomes one user turn; the document part stays protected from truncation."""
    from evalharness.core.chat_template import chat_wrapper

    if tokenizer is None:
        raise EvalHarnessError("--apply-chat-template needs a backend with a chat template")
    wrapper = chat_wrapper(tokenizer, renderer)
    wrapped = []
    for item in planned:
        text = wrapper.wrap(item.prompt.text)
        prompt = dataclasses.replace(
            item.prompt, text=text, document_chars=item.prompt.document_chars + len(wrapper.after),
            sha256=sha256_text(text),
        )
        requests = tuple(_wrap_request(r, wrapper) for r in item.requests)
        wrapped.append(dataclasses.replace(item, prompt=prompt, requests=requests))
    return wrapped


def _wrap_request(request: Request, wrapper: ChatWrapper) -> Request:
    wrapped = dataclasses.replace(
        request, context=wrapper.wrap(request.context), protected_chars=request.protected_chars + len(wrapper.after)
    )
    if isinstance(wrapped, GenerateRequest):
        # The turn itself travels too, for a server that applies its own chat template.
        wrapped = dataclasses.replace(wrapped, messages=(ChatMessage("user", request.context),))
    return wrapped
