"""Batched log-likelihood scoring on a causal LM, reusing every shared prefix.

Three savings, none of which changes a number beyond float rounding:
- requests with identical model inputs (MMLU's four single-token answers) share one row;
- rows that share a long token prefix (a subject's 5-shot exemplars) are grouped, the prefix's
  key/value cache is computed once, and only the suffixes run, batched against it;
- inputs that share a shorter head (one document's answer choices, HellaSwag's context,
  WinoGrande's sentence start) are packed into one row, the head laid out once, with a mask that
  keeps each input's tokens seeing only the head and themselves; rows of many documents batch;
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


def plan(
    prepared: Sequence[PreparedRequest], batch_size: BatchSize, reuse_prefixes: bool = True, pack: bool = True
) -> list[Batch]:
    # A row's prefix may not reach into the positions whose outputs score its continuation.
    scored_from: dict[tuple[int, ...], int] = {}
    for item in prepared:
        start = len(item.inputs) - len(item.continuation)
        scored_from[item.inputs] = min(scored_from.get(item.inputs, start), start)
    return plan_batches(scored_from, batch_size, reuse_prefixes, pack)


def packing_supported(model: Any) -> bool:
    """Packed rows need an attention that takes an arbitrary (4-D) mask."""
    return getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager")


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
    decoder = model.get_decoder()
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
                done = _responses(model, hidden, batch, members, prepared)
            except torch.OutOfMemoryError:
                queue.extend(reversed(split_on_oom(batch)))
                continue
            results.update(done)
            if on_batch is not None:
                on_batch(list(done), list(done.values()))
            bar.update(len(batch.rows))
    return results


HEAD_POSITIONS = 512  # positions per vocabulary projection: bounds the float32 logits held at once


def _responses(
    model: Any,
    hidden: Any,
    batch: Batch,
    members: dict[tuple[int, ...], list[int]],
    prepared: Sequence[PreparedRequest],
) -> dict[int, LoglikelihoodResponse]:
    """Score every request of the batch: one vocabulary projection over all scored positions."""
    import torch

    offset = len(batch.prefix)
    rows: list[int] = []
    columns: list[int] = []
    targets: list[int] = []
    spans: list[tuple[int, int, int]] = []  # (request index, first scored token, tokens)
    for row, pack in enumerate(batch.packs):
        for inputs, start in zip(pack.members, pack.starts(offset), strict=True):
            for index in members[inputs]:
                item = prepared[index]
                n = len(item.continuation)
                first = start + len(inputs) - n - pack.head  # column of the output scoring token 0
                spans.append((index, len(targets), n))
                rows += [row] * n
                columns += range(first, first + n)
                targets += item.continuation
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    picked, greedy = [], []
    selected = hidden[torch.tensor(rows, device=hidden.device), torch.tensor(columns, device=hidden.device)]
    for block in range(0, len(targets), HEAD_POSITIONS):
        logits = head(selected[block : block + HEAD_POSITIONS]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        logprobs = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(targets[block : block + HEAD_POSITIONS], device=logprobs.device)
        picked.append(logprobs.gather(1, target[:, None]).squeeze(1))
        greedy.append(logprobs.argmax(dim=-1) == target)
    token_logprobs, token_greedy = torch.cat(picked).tolist(), torch.cat(greedy).tolist()
    done = {}
    for index, at, n in spans:
        item = prepared[index]
        done[index] = LoglikelihoodResponse(
            logprob=float(sum(token_logprobs[at : at + n])),
            is_greedy=all(token_greedy[at : at + n]),
            num_tokens=n,
            truncated=item.truncated,
            truncated_document=item.truncated_document,
        )
    return done


def split_on_oom(batch: Batch) -> list[Batch]:
    """Halve a batch that ran out of (GPU) memory; a single row that does not fit is an error."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if len(batch.packs) == 1:
        raise EvalHarnessError(
            f"out of memory on a single sequence of {batch.packs[0].length} tokens;"
            " try --dtype bfloat16 or --max-length"
        )
    half = len(batch.packs) // 2
    log.warning("out of memory on a batch of %d; retrying as %d + %d", len(batch.packs), half, len(batch.packs) - half)
    return [Batch(batch.prefix, batch.packs[:half]), Batch(batch.prefix, batch.packs[half:])]


def _forward(decoder: Any, batch: Batch, prefix_cache: Any, device: str, pad_id: int) -> Any:
    """Hidden states of the batch's rows (everything after the shared prefix)."""
    import torch

    offset = len(batch.prefix)
    width = max(p.length for p in batch.packs) - offset
    ids = torch.full((len(batch.packs), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(batch.packs), width), dtype=torch.long)
    # Segment of each column: 0 the pack's head, k the k-th member's own tokens, -1 padding.
    segments = torch.full((len(batch.packs), width), -1, dtype=torch.long)
    for row, pack in enumerate(batch.packs):
        first = pack.members[0]
        tokens, places, owner = list(first[offset : pack.head]), list(range(offset, pack.head)), [0] * (pack.head - offset)
        for k, member in enumerate(pack.members, start=1):
            tokens += member[pack.head :]
            places += range(pack.head, len(member))
            owner += [k] * (len(member) - pack.head)
        ids[row, : len(tokens)] = torch.tensor(tokens)
        positions[row, : len(tokens)] = torch.tensor(places)
        segments[row, : len(tokens)] = torch.tensor(owner)
    packed = any(len(p.members) > 1 for p in batch.packs)
    kwargs: dict[str, Any] = {}
    if packed:
        kwargs["attention_mask"] = _packed_mask(segments, offset, decoder.dtype).to(device)
    if prefix_cache is None and not packed:
        # Right padding under a causal mask: no real position can see a pad token, so no padding
        # mask is needed and attention keeps its fused causal path.
        return decoder(input_ids=ids.to(device), use_cache=False)[0]
    if prefix_cache is not None:
        cache = copy.deepcopy(prefix_cache)
        if len(batch.packs) > 1:
            cache.batch_repeat_interleave(len(batch.packs))
        kwargs.update(use_cache=True, **cache_kwargs(decoder, cache))
    else:
        kwargs["use_cache"] = False
    return decoder(input_ids=ids.to(device), position_ids=positions.to(device), **kwargs)[0]


def _packed_mask(segments: Any, offset: int, dtype: Any) -> Any:
    """Additive 4-D mask: a column sees the cached prefix and the earlier columns of the head and of
    its own member; padding also sees itself (a row with nothing to see would give NaN)."""
    import torch

    rows, width = segments.shape
    query, key = segments[:, :, None], segments[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    visible = causal & ((key == 0) | (key == query)) & (key >= 0)
    visible |= torch.eye(width, dtype=torch.bool)
    visible = torch.cat([torch.ones(rows, width, offset, dtype=torch.bool), visible], dim=-1)
    mask = torch.zeros(visible.shape, dtype=dtype)
    return mask.masked_fill_(~visible, torch.finfo(dtype).min)[:, None]
