"""``evalharness run --dry-run``: how big a run is, before any weights load.

Plans every task as a real run would (data read, prompts rendered, requests built), then counts
documents, requests and prompt tokens with the model's tokenizer only (its config gives the
context length), and how many prompts the context window would cut. Prints the first rendered
prompt of each task. lm-eval users know the prompt part as ``--write_out``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from evalharness.core.prompt_render import PromptRenderer
from evalharness.core.requests import GenerateRequest, LoglikelihoodRequest
from evalharness.data.source import DataSource
from evalharness.run.planning import PlannedDoc, plan
from evalharness.run.settings import ModelSpec, RunConfig

log = logging.getLogger(__name__)


@dataclass
class TaskPlan:
    task: str
    documents: int = 0
    loglikelihood_requests: int = 0
    generate_requests: int = 0
    prompt_tokens: int = 0  # over distinct prompts
    longest_prompt: int = 0
    truncated: int = 0  # documents whose prompt the context window would cut
    first_prompt: str = ""
    _seen: set[str] = field(default_factory=set, repr=False)


def _tokenizer(model: ModelSpec) -> tuple[Any, int | None]:
    """The model's tokenizer and context length, without its weights (local backend only)."""
    if model.backend != "hf":
        return None, None
    from transformers import AutoConfig

    from evalharness.backends.prompt_fitting import load_tokenizer

    trust = bool(model.options.get("trust_remote_code", False))
    try:
        tokenizer = load_tokenizer(model.model, trust_remote_code=trust)
        config = AutoConfig.from_pretrained(model.model, trust_remote_code=trust)
    except (OSError, ValueError) as exc:
        log.warning("dry run: no tokenizer for %s (%s); token counts are left out", model.model, exc)
        return None, None
    limits = [model.options.get("max_length"), getattr(config, "max_position_embeddings", None)]
    return tokenizer, next((int(x) for x in limits if x), None)


def dry_run(config: RunConfig, model: ModelSpec) -> tuple[list[TaskPlan], int | None]:
    planned = plan(config, DataSource(config.data_dir), PromptRenderer(config.prompt_dir))
    tokenizer, max_length = _tokenizer(model)
    plans: dict[str, TaskPlan] = {}
    for item in planned:
        name = item.selection.task.name
        entry = plans.setdefault(name, TaskPlan(name, first_prompt=item.prompt.text))
        entry.documents += 1
        entry.loglikelihood_requests += sum(isinstance(r, LoglikelihoodRequest) for r in item.requests)
        entry.generate_requests += sum(isinstance(r, GenerateRequest) for r in item.requests)
    if tokenizer is not None:
        _count_tokens(planned, plans, tokenizer, max_length)
    return list(plans.values()), max_length


def _count_tokens(planned: list[PlannedDoc], plans: dict[str, TaskPlan], tokenizer: Any, max_length: int | None) -> None:
    from evalharness.backends.prompt_fitting import Encoder

    encoder = Encoder(tokenizer)
    texts = [r.context + (r.continuation if isinstance(r, LoglikelihoodRequest) else "")
             for item in planned for r in item.requests]
    lengths = dict(zip(texts, (len(ids) + len(encoder.start_ids) for ids in encoder.encode_many(texts)), strict=True))
    for item in planned:
        entry = plans[item.selection.task.name]
        if item.prompt.text not in entry._seen:
            entry._seen.add(item.prompt.text)
            tokens = lengths.get(item.prompt.text) or len(encoder.encode_many([item.prompt.text])[0])
            entry.prompt_tokens += tokens
            entry.longest_prompt = max(entry.longest_prompt, tokens)
        if max_length is None:
            continue
        needed = [
            lengths[r.context + r.continuation] if isinstance(r, LoglikelihoodRequest)
            else lengths[r.context] + r.sampling.max_new_tokens
            for r in item.requests
        ]
        entry.truncated += any(n > max_length for n in needed)


def format_plan(plans: list[TaskPlan], max_length: int | None) -> str:
    rows = [("task", "documents", "log-lik requests", "generations", "prompt tokens", "longest", "would truncate")]
    for p in plans:
        tokens = (f"{p.prompt_tokens:,}", f"{p.longest_prompt:,}") if p.prompt_tokens else ("-", "-")
        cut = str(p.truncated) if max_length else "-"
        rows.append((p.task, f"{p.documents:,}", f"{p.loglikelihood_requests:,}", f"{p.generate_requests:,}", *tokens, cut))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                      for r in rows)
    window = f"context window: {max_length:,} tokens" if max_length else "context window: unknown (no tokenizer)"
    prompts = "\n\n".join(f"--- first prompt of {p.task} ---\n{p.first_prompt}" for p in plans)
    return f"{table}\n{window}; nothing was evaluated (--dry-run)\n\n{prompts}"
