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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evalharness.backends.hf.compat import accepts, cache_kwargs, returned_cache
from evalharness.backends.hf.kv_cache import HEADROOM, SharedPrefix, attention_with_prefix, growing_cache, layer_tensors
from evalharness.backends.hf.prefix import MIN_PREFIX, BatchSize, prefix_groups
from evalharness.backends.hf.slots import Slots
from evalharness.backends.prompt_fitting import Encoder, common_prefix_len
from evalharness.backends.protocol import Resume
from evalharness.core.errors import EvalHarnessError
from evalharness.core.progress import progress_bar
from evalharness.core.requests import GenerateRequest, GenerateResponse, SamplingParams

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PAD_SLACK = 1.25  # a prefill chunk's padded tokens over its real ones


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
    decode_rows: BatchSize  # rows decoded at once
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


def _groups(rows: Sequence[_Row]) -> list[list[_Row]]:
    """Rows by decoding settings (only the seed may differ inside a group), longest first:
    an out-of-memory error shows up at once, and padding stays small."""
    groups: dict[SamplingParams, list[_Row]] = {}
    for row in rows:
        groups.setdefault(dataclasses.replace(row.request.sampling, seed=0), []).append(row)
    return [_longest_first(group) for group in groups.values()]


def _longest_first(rows: list[_Row]) -> list[_Row]:
    return sorted(rows, key=lambda r: (-len(r.prompt), r.prompt))


def _clusters(rows: list[_Row], reuse_prefixes: bool) -> list[tuple[tuple[int, ...], list[_Row]]]:
    """(few-shot prefix, rows) runs of one settings group, each run's prefix computed once.

    One call may hold many tasks (a card run sends every generation request together), so the
    rows rarely share one head; grouped by their own heads (BBH's subtasks, GSM8K's exemplars,
    one SQuAD paragraph's questions), each group holds its prefix once. Rows with no long head
    in common with others run together last, with no prefix.
    """
    if not reuse_prefixes:
        return [((), rows)]
    whole = shared_prefix([r.prompt for r in rows])
    if whole:
        return [(whole, rows)]
    by_prompt: dict[tuple[int, ...], list[_Row]] = {}
    for row in rows:
        by_prompt.setdefault(row.prompt, []).append(row)
    clusters: list[tuple[tuple[int, ...], list[_Row]]] = []
    loose: list[_Row] = []
    for _, prompts in prefix_groups(sorted(by_prompt)):
        members = [row for prompt in prompts for row in by_prompt[prompt]]
        prefix = shared_prefix([r.prompt for r in members])
        if prefix:
            clusters.append((prefix, _longest_first(members)))
        else:
            loose += members
    clusters.sort(key=lambda c: -len(c[1][0].prompt))  # the longest rows first, as within a run
    if loose:
        clusters.append((shared_prefix([r.prompt for r in loose]), _longest_first(loose)))
    return clusters


def _capacity(decoder: Decoder, rows: Sequence[_Row], held_once: int = 0) -> int:
    """Rows decoded at once: the batch size, or what memory allows at the longest row's final
    length, less the ``held_once`` prefix tokens that no row holds itself."""
    size = decoder.decode_rows
    if callable(size):
        return max(1, size(max(len(r.prompt) for r in rows) - held_once + rows[0].request.sampling.max_new_tokens))
    return max(1, int(size))


def _by_width(rows: list[_Row], offset: int) -> list[list[_Row]]:
    """Newcomers (longest first) in prefill chunks whose left padding stays within ``PAD_SLACK``
    of their real tokens: one chunk of GSM8K questions from 29 to 113 tokens would be 80% padding."""
    chunks: list[list[_Row]] = []
    current: list[_Row] = []
    real = 0
    for row in rows:
        own = len(row.prompt) - offset
        if current and (len(current) + 1) * (len(current[0].prompt) - offset) > PAD_SLACK * (real + own):
            chunks.append(current)
            current, real = [], 0
        current.append(row)
        real += own
    return chunks + [current] if current else chunks


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
    return [int(torch.multinomial(p, 1, generator=r.generator)) for p, r in zip(probs, rows, strict=False)]


def _stop_window(stops: Sequence[str]) -> int:
    """Tokens whose decoded text surely holds a just-completed stop string: a character may
    take up to four byte-fallback tokens, plus two for a boundary that decodes differently."""
    return 4 * max(len(s) for s in stops) + 2


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
    decoder: Decoder, rows: list[_Row], prefix: tuple[int, ...], shared: SharedPrefix | None
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
        head = [(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in _prefix_layers(decoder, prefix)]
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


def _keep_last(model: Any) -> dict[str, int]:
    """The vocabulary projection only at the last position, where the model allows it."""
    return {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}


def _forward_extras(model: Any, shared: SharedPrefix | None) -> dict[str, Any]:
    """Keyword arguments of every prefill and decode forward pass."""
    extra: dict[str, Any] = dict(_keep_last(model))
    if shared is not None:
        extra["shared_prefix"] = shared  # reaches prefix_attention through the model's **kwargs
    return extra


def _run_group(
    decoder: Decoder,
    rows: list[_Row],
    prefix: tuple[int, ...],
    bar: Any,
    resume: Resume[GenerateResponse],
    prefix_routed: bool,
) -> dict[int, GenerateResponse]:
    """Continuous batching over rows with the same decoding settings that share ``prefix``."""
    import torch

    params = rows[0].request.sampling
    eos = frozenset() if params.ignore_eos else frozenset(decoder.eos_token_ids)
    # The rows' common head (few-shot exemplars) is computed once; where the model's attention
    # can be routed, its cache is also held once (else copied into every row).
    shared = SharedPrefix(_prefix_layers(decoder, prefix), len(prefix)) if prefix and prefix_routed else None
    capacity = _capacity(decoder, rows, shared.length if shared else 0)
    log.debug("generate: %d requests, up to %d at once", len(rows), capacity)
    extra = _forward_extras(decoder.model, shared)
    if shared is not None:
        log.debug("generate: a %d-token prefix held once, shared by %d rows", len(prefix), len(rows))
    waiting = list(reversed(rows))  # pop() takes the longest first
    active: list[_Row] = []
    slots: Slots | None = None
    done: dict[int, GenerateResponse] = {}

    def settle(batch: list[_Row], tokens: list[int]) -> list[int]:
        """Record each row's new token; report finished rows; the positions of the others."""
        keep = []
        for i, (row, token) in enumerate(zip(batch, tokens, strict=True)):
            response = _finish(decoder, row, token, eos)
            if response is None:
                keep.append(i)
                continue
            done[row.index] = response
            resume.finished([row.index], [response])
            bar.update(1)
        return keep

    while waiting or active:
        if waiting and len(active) < capacity:
            newcomers = [waiting.pop() for _ in range(min(capacity - len(active), len(waiting)))]
            if not params.greedy:
                for row in newcomers:
                    row.generator = torch.Generator(device=decoder.device).manual_seed(row.request.sampling.seed)
            for chunk in _by_width(newcomers, len(prefix)):
                fresh, logits = _prefill(decoder, chunk, prefix, shared)
                tokens = _next_tokens(logits, params, chunk)
                keep = settle(chunk, tokens)
                fresh.tokens = tokens
                fresh.select(keep)
                chunk = [chunk[i] for i in keep]
                if chunk:
                    if slots is None:
                        slots = fresh
                    else:
                        slots.join(fresh)
                    active += chunk
            continue  # admit more if some finished at once; otherwise decode a step
        assert slots is not None
        ids = torch.tensor(slots.tokens, dtype=torch.long, device=decoder.device)[:, None]
        slots.mask = torch.cat([slots.mask, slots.mask.new_ones((len(active), 1))], dim=-1)
        # With a shared prefix the model gets a ready 4-D mask over the rows' own columns.
        attention = slots.mask.bool()[:, None, None, :] if shared is not None else slots.mask
        out = decoder.model(input_ids=ids, attention_mask=attention, position_ids=slots.positions,
                            use_cache=True, **extra, **cache_kwargs(decoder.model, slots.cache))
        slots.cache = returned_cache(out)
        slots.positions = slots.positions + 1
        tokens = _next_tokens(out.logits[:, -1].float(), params, active)
        keep = settle(active, tokens)
        slots.tokens = tokens
        slots.select(keep)
        active = [active[i] for i in keep]
        if not active:
            slots = None
    return done


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
    """KV cache of ``prefix`` (one row), kept while consecutive groups share it."""
    import torch

    memo = decoder.prefix_memo
    if memo is None or memo[0] != prefix:
        decoder.prefix_memo = None  # free the previous prefix before computing the next
        out = decoder.model(input_ids=torch.tensor([prefix], device=decoder.device), use_cache=True,
                            **_keep_last(decoder.model))
        memo = (prefix, returned_cache(out))
        decoder.prefix_memo = memo
    return memo[1]


def _prefix_layers(decoder: Decoder, prefix: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return layer_tensors(_prefix_cache(decoder, prefix))


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
        progress_bar(total=len(requests), desc="generate", unit="req") as bar,
    ):
        bar.update(len(results))
        for group in _groups([r for r in rows if r.index not in resume.done]):
            for prefix, cluster in _clusters(group, decoder.reuse_prefixes):
                results.update(_run_group(decoder, cluster, prefix, bar, resume, prefix_routed))
    return [results[i] for i in range(len(requests))]
