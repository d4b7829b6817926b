"""Batched log-likelihood scoring on a causal LM, reusing every shared prefix.

Three savings, none of which changes a number beyond float rounding:
- requests with identical model inputs (MMLU's four single-token answers) share one row;
- rows that share a long token prefix (a subject's 5-shot exemplars) are grouped, the prefix's
  key/value cache is computed once, and only the suffixes run, batched against it;
- the vocabulary projection and log-softmax run only at continuation positions.
Batches are planned from the whole request list before any cache lookup, so a resumed run
recomputes a missing request in exactly the batch it had the first time.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from evalharness.backends.hf.compat import cache_kwargs, returned_cache
from evalharness.backends.hf.prefix import Batch, BatchSize, plan_batches
from evalharness.backends.prompt_fitting import Encoder
from evalharness.core.errors import EvalHarnessError
from evalharness.core.progress import progress_bar
from evalharness.core.requests import LoglikelihoodRequest, LoglikelihoodResponse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedRequest:
    inputs: tuple[int, ...]  # the (possibly truncated) context + continuation[:-1]
    continuation: tuple[int, ...]
    truncated: bool
    truncated_document: bool


def prepare(
    encoder: Encoder, requests: Sequence[LoglikelihoodRequest], max_length: int
) -> list[PreparedRequest]:
    # One batched tokenizer call for every distinct string, instead of one call per request.
    encoder.encode_many(
        [s for r in requests for s in (r.context.rstrip(), r.context + r.continuation)]
    )
    prepared = []
    shared: dict[tuple[int, ...], tuple[int, ...]] = {}  # one tuple per distinct input
    for request in requests:
        context, continuation = encoder.encode_pair(
            request.context, request.continuation, request.protected_chars
        )
        if len(continuation) > max_length - 1:
            raise EvalHarnessError(
                f"a continuation of {len(continuation)} tokens does not fit the model's "
                f"{max_length}-token context"
            )
        window = encoder.fit(context, max_length - len(continuation) + 1)
        inputs = window.ids + continuation[:-1]
        prepared.append(
            PreparedRequest(
                shared.setdefault(inputs, inputs),
                continuation,
                window.truncated,
                window.truncated_document,
            )
        )
    encoder.forget()
    return prepared


def plan(prepared: Sequence[PreparedRequest], batch_size: BatchSize, reuse_prefixes: bool = True) -> list[Batch]:
    # A row's prefix may not reach into the positions whose outputs score its continuation.
    scored_from: dict[tuple[int, ...], int] = {}
    for item in prepared:
        start = len(item.inputs) - len(item.continuation)
        scored_from[item.inputs] = min(scored_from.get(item.inputs, start), start)
    return plan_batches(scored_from, batch_size, reuse_prefixes)


def score(
    model: Any,
    prepared: Sequence[PreparedRequest],
    batches: Sequence[Batch],
    device: str,
    pad_id: int,
    on_batch: Callable[[list[int], list[LoglikelihoodResponse]], None] | None = None,
    skip: Callable[[list[int]], bool] | None = None,
) -> dict[int, LoglikelihoodResponse]:
    """Responses by request index, for every batch not skipped; ``on_batch`` sees each batch."""
    import torch

    members: dict[tuple[int, ...], list[int]] = {}
    for index, item in enumerate(prepared):
        members.setdefault(item.inputs, []).append(index)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    results: dict[int, LoglikelihoodResponse] = {}
    prefix_cache: tuple[tuple[int, ...], Any] = ((), None)

    total = sum(len(b.rows) for b in batches)
    queue = list(reversed(batches))
    with torch.inference_mode(), progress_bar(total=total, desc="loglikelihood", unit="seq") as bar:
        while queue:
            batch = queue.pop()
            if skip is not None and skip([i for row in batch.rows for i in members[row]]):
                bar.update(len(batch.rows))
                continue
            try:
                if batch.prefix and prefix_cache[0] != batch.prefix:
                    out = decoder(input_ids=torch.tensor([batch.prefix], device=device), use_cache=True)
                    prefix_cache = (batch.prefix, returned_cache(out))
                hidden = _forward(decoder, batch, prefix_cache[1] if batch.prefix else None, device, pad_id)
            except torch.OutOfMemoryError:
                queue.extend(reversed(split_on_oom(batch)))
                continue
            offset = len(batch.prefix)
            done_indices, done = [], []
            for row, inputs in enumerate(batch.rows):
                for index in members[inputs]:
                    item = prepared[index]
                    n, end = len(item.continuation), len(inputs) - offset
                    logits = head(hidden[row, end - n : end]).float()
                    if softcap:
                        logits = torch.tanh(logits / softcap) * softcap
                    logprobs = torch.log_softmax(logits, dim=-1)
                    target = torch.tensor(item.continuation, device=logprobs.device)
                    picked = logprobs.gather(1, target[:, None]).squeeze(1)
                    response = LoglikelihoodResponse(
                        logprob=float(picked.sum()),
                        is_greedy=bool((logprobs.argmax(dim=-1) == target).all()),
                        num_tokens=n,
                        truncated=item.truncated,
                        truncated_document=item.truncated_document,
                    )
                    results[index] = response
                    done_indices.append(index)
                    done.append(response)
            if on_batch is not None:
                on_batch(done_indices, done)
            bar.update(len(batch.rows))
    return results


def split_on_oom(batch: Batch) -> list[Batch]:
    """Halve a batch that ran out of (GPU) memory; a single row that does not fit is an error."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if len(batch.rows) == 1:
        raise EvalHarnessError(
            f"out of memory on a single sequence of {len(batch.rows[0])} tokens;"
            " try --dtype bfloat16 or --max-length"
        )
    half = len(batch.rows) // 2
    log.warning("out of memory on a batch of %d; retrying as %d + %d", len(batch.rows), half, len(batch.rows) - half)
    return [Batch(batch.prefix, batch.rows[:half]), Batch(batch.prefix, batch.rows[half:])]


def _forward(decoder: Any, batch: Batch, prefix_cache: Any, device: str, pad_id: int) -> Any:
    """Hidden states of the batch's suffixes (everything after the shared prefix)."""
    import torch

    offset = len(batch.prefix)
    width = max(len(r) for r in batch.rows) - offset
    ids = torch.full((len(batch.rows), width), pad_id, dtype=torch.long)
    for row, inputs in enumerate(batch.rows):
        ids[row, : len(inputs) - offset] = torch.tensor(inputs[offset:])
    # Right padding under a causal mask: no real position can see a pad token, so no padding
    # mask is needed and attention keeps its fused causal path.
    if prefix_cache is None:
        return decoder(input_ids=ids.to(device), use_cache=False)[0]
    cache = copy.deepcopy(prefix_cache)
    if len(batch.rows) > 1:
        cache.batch_repeat_interleave(len(batch.rows))
    positions = torch.arange(offset, offset + width, device=device).expand(len(batch.rows), -1)
    return decoder(
        input_ids=ids.to(device), position_ids=positions, use_cache=True, **cache_kwargs(decoder, cache)
    )[0]
