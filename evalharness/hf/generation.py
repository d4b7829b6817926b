"""Batched generation on a causal LM with our own KV-cache decode loop.

We do not call ``model.generate``: owning the loop lets every row stop on its own (EOS, stop
string, length), leave the batch at once, and sample from its own seeded RNG, so a request's
output never depends on which requests it happened to be batched with.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evalharness.errors import EvalHarnessError
from evalharness.progress import progress_bar
from evalharness.requests import GenerateRequest, GenerateResponse, SamplingParams

if TYPE_CHECKING:
    import torch

    from evalharness.hf.backend import HFBackend

log = logging.getLogger(__name__)


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


def _prepare(backend: HFBackend, index: int, request: GenerateRequest) -> _Row:
    budget = backend.max_length - request.sampling.max_new_tokens
    if budget <= 0:
        raise EvalHarnessError(
            f"max_new_tokens={request.sampling.max_new_tokens} leaves no room for a prompt "
            f"in the model's {backend.max_length}-token context"
        )
    encoded = backend.encoder.encode_context(request.context, request.protected_chars)
    window = backend.encoder.fit(encoded, budget)
    return _Row(index, request, window.ids, window.truncated, window.truncated_document)


def _batches(rows: Sequence[_Row], batch_size: int) -> list[list[_Row]]:
    # Only the seed may differ inside a batch: the decode settings are applied per batch.
    groups: dict[SamplingParams, list[_Row]] = {}
    for row in rows:
        groups.setdefault(dataclasses.replace(row.request.sampling, seed=0), []).append(row)
    batches: list[list[_Row]] = []
    for group in groups.values():
        # Longest first: an out-of-memory error shows up at once, and padding stays small.
        group.sort(key=lambda r: (-len(r.prompt), r.prompt))
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
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
    backend: HFBackend, row: _Row, token: int, eos: frozenset[int]
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
        text = backend.tokenizer.decode(row.tokens, skip_special_tokens=True)
        hits = [i for i in (text.find(s) for s in stops) if i >= 0]
        if hits:
            text, reason = text[: min(hits)], "stop"
    if not reason:
        return None
    if text is None:
        text = backend.tokenizer.decode(row.tokens, skip_special_tokens=True)
    return GenerateResponse(
        text=text,
        num_tokens=len(row.tokens),
        finish_reason=reason,
        truncated=row.truncated,
        truncated_document=row.truncated_document,
    )


def _run_batch(backend: HFBackend, rows: list[_Row], bar: Any) -> dict[int, GenerateResponse]:
    import torch
    from transformers import DynamicCache

    device = backend.device
    params = rows[0].request.sampling
    eos = frozenset() if params.ignore_eos else frozenset(int(t) for t in backend.eos_token_ids)
    if not params.greedy:
        for row in rows:
            row.generator = torch.Generator(device=device).manual_seed(row.request.sampling.seed)
    width = max(len(r.prompt) for r in rows)
    ids = torch.full((len(rows), width), backend.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):  # left padding: every row's next token lands in one column
        ids[i, width - len(row.prompt) :] = torch.tensor(row.prompt)
        mask[i, width - len(row.prompt) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    cache = DynamicCache(config=backend.model.config)
    # transformers 5.2x renames ``past_key_values`` to ``cache``; older/remote models keep it.
    parameters = inspect.signature(backend.model.forward).parameters
    extra: dict[str, Any] = {"cache" if "cache" in parameters else "past_key_values": cache}
    if "logits_to_keep" in parameters:
        extra["logits_to_keep"] = 1  # the vocabulary projection only at the last position
    done: dict[int, GenerateResponse] = {}
    active = list(rows)
    while True:
        out = backend.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **extra,
        )
        tokens = _next_tokens(out.logits[:, -1].float(), params, active)
        keep = []
        for i, (row, token) in enumerate(zip(active, tokens)):
            response = _finish(backend, row, token, eos)
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


def generate(backend: HFBackend, requests: Sequence[GenerateRequest]) -> list[GenerateResponse]:
    """Responses in the order of ``requests``."""
    import torch

    rows = [_prepare(backend, i, r) for i, r in enumerate(requests)]
    batches = _batches(rows, backend.batch_size)
    log.debug("generate: %d requests in %d batches", len(rows), len(batches))
    results: dict[int, GenerateResponse] = {}
    with torch.inference_mode(), progress_bar(
        total=len(requests), desc="generate", unit="req"
    ) as bar:
        for batch in batches:
            results.update(_run_batch(backend, batch, bar))
    return [results[i] for i in range(len(requests))]
