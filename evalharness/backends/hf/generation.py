"""Batched generation on a causal LM with our own KV-cache decode loop.

We do not call ``model.generate``: owning the loop lets every row stop on its own (EOS, stop
string, length), leave the batch at once, and sample from its own seeded RNG, so a request's
output never depends on which requests it happened to be batched with.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evalharness.backends.hf.compat import accepts, cache_kwargs, returned_cache
from evalharness.backends.hf.prefix import MIN_PREFIX, BatchSize, chunk
from evalharness.backends.prompt_fitting import Encoder, common_prefix_len
from evalharness.backends.protocol import Resume
from evalharness.core.errors import EvalHarnessError
from evalharness.core.progress import progress_bar
from evalharness.core.requests import GenerateRequest, GenerateResponse, SamplingParams

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class Decoder:
    """What generation needs from the local backend, passed explicitly (no back-reference)."""

    model: Any
    encoder: Encoder
    decode: Callable[[list[int]], str]
    device: str
    pad_id: int
    eos_token_ids: tuple[int, ...]
    max_length: int
    rows_per_batch: BatchSize
    reuse_prefixes: bool
    prefix_memo: tuple[tuple[int, ...], Any] | None = None  # the last prefix's KV cache


@dataclass
class _Row:
    """One request in flight: its prompt and what it has generated so far."""

    index: int  # position in the caller's request list
    request: GenerateRequest
    prompt: tuple[int, ...]
    truncated: bool
    truncated_document: bool
    generator: Any = None  # torch.Generator, only when sampling
    tokens: list[int] = field(default_factory=list)


def _prepare(decoder: Decoder, index: int, request: GenerateRequest) -> _Row:
    budget = decoder.max_length - request.sampling.max_new_tokens
    if budget <= 0:
        raise EvalHarnessError(
            f"max_new_tokens={request.sampling.max_new_tokens} leaves no room for a prompt "
            f"in the model's {decoder.max_length}-token context"
        )
    encoded = decoder.encoder.encode_context(request.context, request.protected_chars)
    window = decoder.encoder.fit(encoded, budget)
    return _Row(index, request, window.ids, window.truncated, window.truncated_document)


def _batches(rows: Sequence[_Row], batch_size: BatchSize) -> list[list[_Row]]:
    # Only the seed may differ inside a batch: the decode settings are applied per batch.
    groups: dict[SamplingParams, list[_Row]] = {}
    for row in rows:
        groups.setdefault(dataclasses.replace(row.request.sampling, seed=0), []).append(row)
    batches: list[list[_Row]] = []
    for params, group in groups.items():
        # Longest first: an out-of-memory error shows up at once, and padding stays small.
        group.sort(key=lambda r: (-len(r.prompt), r.prompt))
        start = 0
        for size in map(len, chunk([r.prompt for r in group], batch_size, params.max_new_tokens)):
            batches.append(group[start : start + size])
            start += size
    return batches


def _next_tokens(logits: torch.Tensor, params: SamplingParams, rows: Sequence[_Row]) -> list[int]:
    import torch

    if params.greedy:
        return logits.argmax(dim=-1).tolist()
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True, stable=True)
        probs = ordered.softmax(dim=-1)
        # Drop a token once the mass before it already reaches top_p; the top token always stays.
        ordered = ordered.masked_fill(probs.cumsum(dim=-1) - probs >= params.top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)
    probs = logits.softmax(dim=-1)
    # One draw per row from the row's own generator: independent of its batch-mates.
    return [int(torch.multinomial(p, 1, generator=r.generator)) for p, r in zip(probs, rows)]


def _finish(
    decoder: Decoder, row: _Row, token: int, eos: frozenset[int]
) -> GenerateResponse | None:
    """Records ``token`` for ``row``; returns the response once the row is done."""
    sampling = row.request.sampling
    stops = [s for s in row.request.stop if s]
    if token in eos:
        reason = "eos"  # the EOS token itself is neither kept nor counted
    else:
        row.tokens.append(token)
        reason = "length" if len(row.tokens) >= sampling.max_new_tokens else ""
    text = None
    if stops and reason != "eos":
        text = decoder.decode(row.tokens)
        hits = [i for i in (text.find(s) for s in stops) if i >= 0]
        if hits:
            text, reason = text[: min(hits)], "stop"
    if not reason:
        return None
    if text is None:
        text = decoder.decode(row.tokens)
    return GenerateResponse(
        text=text,
        num_tokens=len(row.tokens),
        finish_reason=reason,
        truncated=row.truncated,
        truncated_document=row.truncated_document,
    )


def _run_batch(decoder: Decoder, rows: list[_Row], bar: Any) -> dict[int, GenerateResponse]:
    import torch
    from transformers import DynamicCache

    device = decoder.device
    params = rows[0].request.sampling
    eos = frozenset() if params.ignore_eos else frozenset(int(t) for t in decoder.eos_token_ids)
    if not params.greedy:
        for row in rows:
            row.generator = torch.Generator(device=device).manual_seed(row.request.sampling.seed)
    # Rows sharing a long prompt head (few-shot exemplars) compute it once and expand its cache.
    prefix = shared_prefix([r.prompt for r in rows]) if decoder.reuse_prefixes else ()
    extra: dict[str, Any] = {}
    if accepts(decoder.model, "logits_to_keep"):
        extra["logits_to_keep"] = 1  # the vocabulary projection only at the last position
    if prefix:
        cache = copy.deepcopy(_prefix_cache(decoder, prefix))
        if len(rows) > 1:
            cache.batch_repeat_interleave(len(rows))
    else:
        cache = DynamicCache(config=decoder.model.config)
    offset = len(prefix)
    width = max(len(r.prompt) for r in rows) - offset
    ids = torch.full((len(rows), width), decoder.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), offset + width), dtype=torch.long)
    mask[:, :offset] = 1
    for i, row in enumerate(rows):  # left padding: every row's next token lands in one column
        suffix = row.prompt[offset:]
        ids[i, width - len(suffix) :] = torch.tensor(suffix)
        mask[i, offset + width - len(suffix) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)[:, offset:]
    extra.update(cache_kwargs(decoder.model, cache))
    done: dict[int, GenerateResponse] = {}
    active = list(rows)
    while True:
        out = decoder.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **extra,
        )
        tokens = _next_tokens(out.logits[:, -1].float(), params, active)
        keep = []
        for i, (row, token) in enumerate(zip(active, tokens)):
            response = _finish(decoder, row, token, eos)
            if response is None:
                keep.append(i)
            else:
                done[row.index] = response
                bar.update(1)
        if not keep:
            return done
        if len(keep) < len(active):
            # Finished rows leave the batch: fewer rows per step, and no wasted decoding.
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, positions = mask[index], positions[index]
            active = [active[i] for i in keep]
            tokens = [tokens[i] for i in keep]
        ids = torch.tensor(tokens, dtype=torch.long, device=device)[:, None]
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
        positions = positions[:, -1:] + 1


def shared_prefix(prompts: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    """The prompts' common head, if long enough to pay; each row keeps at least one token."""
    if len(prompts) < 2:
        return ()
    length = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for other in prompts[1:]:
        length = min(length, common_prefix_len(first, other))
    return first[:length] if length >= MIN_PREFIX else ()


def _prefix_cache(decoder: Decoder, prefix: tuple[int, ...]) -> Any:
    """KV cache of ``prefix`` (one row), kept while consecutive batches share it."""
    import torch

    memo = decoder.prefix_memo
    if memo is None or memo[0] != prefix:
        out = decoder.model(
            input_ids=torch.tensor([prefix], device=decoder.device), use_cache=True,
            **({"logits_to_keep": 1} if accepts(decoder.model, "logits_to_keep") else {}),
        )
        memo = (prefix, returned_cache(out))
        decoder.prefix_memo = memo
    return memo[1]


def generate(
    decoder: Decoder, requests: Sequence[GenerateRequest], resume: Resume[GenerateResponse] | None = None
) -> list[GenerateResponse]:
    """Responses in the order of ``requests``.

    Batches are planned over all requests first; a batch whose responses are all known
    (``resume.done``) is skipped, so a resumed run recomputes a request in the same batch as
    before. Each finished batch is reported through ``resume``.
    """
    import torch

    resume = resume or Resume()
    if not decoder.eos_token_ids and any(not r.sampling.ignore_eos for r in requests):
        raise EvalHarnessError(
            "the model has no EOS token to stop generation at: pass --model-args eos_token_id=N,"
            " or --gen-kwargs ignore_eos=true to always generate max_new_tokens"
        )
    rows = [_prepare(decoder, i, r) for i, r in enumerate(requests)]
    decoder.encoder.forget()
    batches = _batches(rows, decoder.rows_per_batch)
    log.debug("generate: %d requests in %d batches", len(rows), len(batches))
    results: dict[int, GenerateResponse] = dict(resume.done)
    with torch.inference_mode(), progress_bar(total=len(requests), desc="generate", unit="req") as bar:
        for batch in batches:
            if all(row.index in resume.done for row in batch):
                bar.update(len(batch))
                continue
            done = _run_batch(decoder, batch, bar)
            results.update(done)
            resume.finished(list(done), list(done.values()))
    return [results[i] for i in range(len(requests))]
