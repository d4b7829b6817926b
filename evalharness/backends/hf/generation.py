"""Batched generation on a causal LM with our own KV-cache decode loop.

We do not call ``model.generate``: owning the loop lets every row stop on its own (EOS, stop
string, length) and sample from its own seeded RNG, so a request's output never depends on which
requests it happened to be batched with. Batching is continuous: when a row finishes, a waiting
request with the same decoding settings takes its slot at the next step (prefilled against the
shared few-shot prefix, then joined to the running batch), instead of the batch shrinking until
its longest row ends. Stop strings are checked on a short decoded tail, not the whole output.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evalharness.backends.hf.clusters import (
    Decoder,
    Prefixes,
    Row,
    cluster_rows,
    keep_last,
    longest_first,
    prefix_layers,
    weight_first_projection,
)
from evalharness.backends.hf.compat import cache_kwargs, returned_cache
from evalharness.backends.hf.kv_cache import HEADROOM, SharedPrefix, attention_with_prefix, growing_cache
from evalharness.backends.hf.slots import Slots
from evalharness.backends.protocol import Resume
from evalharness.core.errors import EvalHarnessError
from evalharness.core.progress import progress_bar
from evalharness.core.requests import GenerateRequest, GenerateResponse, SamplingParams

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PAD_SLACK = 1.25  # a prefill chunk's padded tokens over its real ones


def _prepare(decoder: Decoder, index: int, request: GenerateRequest) -> Row:
    budget = decoder.max_length - request.sampling.max_new_tokens
    if budget <= 0:
        raise EvalHarnessError(
            f"max_new_tokens={request.sampling.max_new_tokens} leaves no room for a prompt "
            f"in the model's {decoder.max_length}-token context"
        )
    encoded = decoder.encoder.encode_context(request.context, request.protected_chars)
    window = decoder.encoder.fit(encoded, budget)
    return Row(index, request, window.ids, window.truncated, window.truncated_document)


def _groups(rows: Sequence[Row]) -> list[list[Row]]:
    """Rows by decoding settings (only the seed may differ inside a group), longest first:
    an out-of-memory error shows up at once, and padding stays small."""
    groups: dict[SamplingParams, list[Row]] = {}
    for row in rows:
        groups.setdefault(dataclasses.replace(row.request.sampling, seed=0), []).append(row)
    return [longest_first(group) for group in groups.values()]


def _capacity(decoder: Decoder, rows: Sequence[Row], held_once: int = 0) -> int:
    """Rows decoded at once: the batch size, or what memory allows at the longest row's final
    length, less the ``held_once`` prefix tokens that no row holds itself."""
    size = decoder.decode_rows
    if callable(size):
        return max(1, size(max(len(r.prompt) for r in rows) - held_once + rows[0].request.sampling.max_new_tokens))
    return max(1, int(size))


def _by_width(rows: list[Row]) -> list[list[Row]]:
    """Newcomers (one cluster's longest first, cluster by cluster) in prefill chunks of one prefix
    whose left padding stays within ``PAD_SLACK`` of their real tokens: one chunk of GSM8K
    questions from 29 to 113 tokens would be 80% padding."""
    chunks: list[list[Row]] = []
    current: list[Row] = []
    real = 0
    for row in rows:
        own = len(row.prompt) - len(row.prefix)
        width = len(current[0].prompt) - len(current[0].prefix) if current else own
        if current and (row.prefix != current[0].prefix or (len(current) + 1) * width > PAD_SLACK * (real + own)):
            chunks.append(current)
            current, real = [], 0
        current.append(row)
        real += own
    return chunks + [current] if current else chunks


def _next_tokens(logits: torch.Tensor, params: SamplingParams, rows: Sequence[Row]) -> list[int]:
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
    return [int(torch.multinomial(p, 1, generator=r.generator)) for p, r in zip(probs, rows, strict=False)]


def _stop_window(stops: Sequence[str]) -> int:
    """Tokens whose decoded text surely holds a just-completed stop string: a character may
    take up to four byte-fallback tokens, plus two for a boundary that decodes differently."""
    return 4 * max(len(s) for s in stops) + 2


def _finish(
    decoder: Decoder, row: Row, token: int, eos: frozenset[int]
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
        # Only the tail can hold a stop string that this token completed; the whole output is
        # decoded once, when one is found there (or when the row ends).
        tail = decoder.decode(row.tokens[-_stop_window(stops):])
        if reason or any(s in tail for s in stops):
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


def _prefill(
    decoder: Decoder, rows: list[Row], prefix: tuple[int, ...], shared: SharedPrefix | None
) -> tuple[Slots, torch.Tensor]:
    """The prompts of ``rows`` (left-padded after the shared prefix) run once; returns their
    slots and the logits for each row's first new token. With ``shared``, the prefix stays out of
    the rows' cache and mask (``prefix_attention`` reads it); without, it is copied into each row."""
    import torch

    offset = len(prefix)
    width = max(len(r.prompt) for r in rows) - offset
    ids = torch.full((len(rows), width), decoder.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):  # left padding: every row's next token lands in one column
        suffix = row.prompt[offset:]
        ids[i, width - len(suffix) :] = torch.tensor(suffix)
        mask[i, width - len(suffix) :] = 1
    ids, mask = ids.to(decoder.device), mask.to(decoder.device)
    positions = offset + (mask.cumsum(dim=-1) - 1).clamp(min=0)
    headroom = min(rows[0].request.sampling.max_new_tokens, HEADROOM)  # spare columns for decoding
    if shared is not None:
        cache = growing_cache(decoder.model.config, headroom=headroom)
        causal = torch.ones((width, width), dtype=torch.bool, device=mask.device).tril()
        attention: torch.Tensor = mask.bool()[:, None, None, :] & causal[None, None]
    elif prefix:
        head = [(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in prefix_layers(decoder, prefix)]
        cache = growing_cache(decoder.model.config, head, headroom=width + headroom)
        mask = torch.cat([mask.new_ones((len(rows), offset)), mask], dim=-1)
        attention = mask
    else:
        cache = growing_cache(decoder.model.config, headroom=headroom)
        attention = mask
    out = decoder.model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True,
                        **_forward_extras(decoder.model, shared), **cache_kwargs(decoder.model, cache))
    if shared is not None and shared.calls == 0:
        raise EvalHarnessError(f"{type(decoder.model).__name__} does not route attention through transformers' "
                               "attention interface; shared-prefix generation cannot be used with it")
    slots = Slots(returned_cache(out), mask, positions[:, -1:] + 1, [])
    return slots, out.logits[:, -1].float()


def _forward_extras(model: Any, shared: SharedPrefix | None) -> dict[str, Any]:
    """Keyword arguments of every prefill and decode forward pass."""
    extra: dict[str, Any] = dict(keep_last(model))
    if shared is not None:
        extra["shared_prefix"] = shared  # reaches prefix_attention through the model's **kwargs
    return extra


def _run_group(
    decoder: Decoder, rows: list[Row], bar: Any, resume: Resume[GenerateResponse], prefix_routed: bool
) -> dict[int, GenerateResponse]:
    """Continuous batching over rows with the same decoding settings, cluster after cluster.

    Rows of several clusters (tasks) share the batch while one cluster's tail finishes and the
    next one's rows start, each row reading its own prefix. Where the model's attention can be
    routed every prefix is held once; otherwise ``rows`` are one cluster, its prefix copied into
    each row.
    """
    import torch

    params = rows[0].request.sampling
    eos = frozenset() if params.ignore_eos else frozenset(decoder.eos_token_ids)
    prefixes = Prefixes(decoder, rows, prefix_routed)
    capacity = _capacity(decoder, rows, min(len(r.prefix) for r in rows) if prefix_routed else 0)
    log.debug("generate: %d requests, up to %d at once", len(rows), capacity)
    waiting = list(reversed(rows))  # pop() takes the first cluster's longest first
    active: list[Row] = []
    slots: Slots | None = None
    done: dict[int, GenerateResponse] = {}

    def settle(batch: list[Row], tokens: list[int]) -> list[int]:
        """Record each row's new token; report finished rows; the positions of the others."""
        keep = []
        for i, (row, token) in enumerate(zip(batch, tokens, strict=True)):
            response = _finish(decoder, row, token, eos)
            if response is None:
                keep.append(i)
                continue
            done[row.index] = response
            prefixes.finished(row)
            resume.finished([row.index], [response])
            bar.update(1)
        return keep

    free: list[int] = []  # finished rows' slots, kept only until newcomers are written over them

    def admit(chunk: list[Row], fresh: Slots) -> None:
        """Newcomers take finished rows' slots in place; the rest join the batch."""
        nonlocal slots
        if slots is None:
            slots = fresh
            active.extend(chunk)
            return
        placed = min(len(free), len(chunk)) if slots.can_place() else 0
        if placed:
            slots.place(fresh, free[:placed])
            for slot, row in zip(free, chunk[:placed], strict=False):
                active[slot] = row
            del free[:placed]
            if placed == len(chunk):
                return
            fresh.select(list(range(placed, len(chunk))))
        slots.join(fresh)
        active.extend(chunk[placed:])

    def drop(finished: list[int]) -> None:
        nonlocal slots, active
        assert slots is not None
        keep = sorted(set(range(len(active))) - set(finished))
        slots.select(keep)
        active = [active[i] for i in keep]
        if not active:
            slots = None

    while waiting or active:
        if waiting and len(active) - len(free) < capacity:
            newcomers = [waiting.pop() for _ in range(min(capacity - len(active) + len(free), len(waiting)))]
            if not params.greedy:
                for row in newcomers:
                    row.generator = torch.Generator(device=decoder.device).manual_seed(row.request.sampling.seed)
            for chunk in _by_width(newcomers):
                fresh, logits = _prefill(decoder, chunk, chunk[0].prefix, prefixes.reading(chunk))
                tokens = _next_tokens(logits, params, chunk)
                keep = settle(chunk, tokens)
                fresh.tokens = tokens
                fresh.select(keep)
                if keep:
                    admit([chunk[i] for i in keep], fresh)
            if free:  # fewer newcomers than finished rows
                drop(free)
                free = []
            continue  # admit more if some finished at once; otherwise decode a step
        assert slots is not None
        shared = prefixes.reading(active)
        ids = torch.tensor(slots.tokens, dtype=torch.long, device=decoder.device)[:, None]
        slots.mask = torch.cat([slots.mask, slots.mask.new_ones((len(active), 1))], dim=-1)
        # With a shared prefix the model gets a ready 4-D mask over the rows' own columns.
        attention = slots.mask.bool()[:, None, None, :] if shared is not None else slots.mask
        out = decoder.model(input_ids=ids, attention_mask=attention, position_ids=slots.positions,
                            use_cache=True, **_forward_extras(decoder.model, shared), **cache_kwargs(decoder.model, slots.cache))
        slots.cache = returned_cache(out)
        slots.positions = slots.positions + 1
        tokens = _next_tokens(out.logits[:, -1].float(), params, active)
        keep = settle(active, tokens)
        slots.tokens = tokens
        finished = sorted(set(range(len(active))) - set(keep))
        if finished and waiting and slots.can_place():
            free = finished  # the next admission writes newcomers over them: no copy of the batch
        elif finished:
            drop(finished)
    return done


def generate(
    decoder: Decoder, requests: Sequence[GenerateRequest], resume: Resume[GenerateResponse] | None = None
) -> list[GenerateResponse]:
    """Responses in the order of ``requests``.

    Requests already known (``resume.done``) are skipped; every other is reported through
    ``resume`` the moment it finishes, so a killed run loses only the rows in flight.
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
    results: dict[int, GenerateResponse] = dict(resume.done)
    with (
        torch.inference_mode(),
        attention_with_prefix(decoder.model) as prefix_routed,
        weight_first_projection(decoder.model, decoder.device),
        progress_bar(total=len(requests), desc="generate", unit="req") as bar,
    ):
        bar.update(len(results))
        for group in _groups([r for r in rows if r.index not in resume.done]):
            clusters = cluster_rows(group, decoder.reuse_prefixes)
            # Clusters whose prefix is held once run in one batch; the rest one after another.
            held = [c for c in clusters if prefix_routed and c[0].prefix]
            runs = [[row for c in held for row in c]] if held else []
            runs += [c for c in clusters if not (prefix_routed and c[0].prefix)]
            for run in runs:
                results.update(_run_group(decoder, run, bar, resume, prefix_routed))
    return [results[i] for i in range(len(requests))]
