"""Rows of one generation call grouped by their few-shot head, and the caches of those heads.

A run may send many tasks' generation requests in one call (a card run sends all of them), so
the rows rarely share one head. ``cluster_rows`` groups them by their own long head (BBH's
subtasks, GSM8K's exemplars, one SQuAD paragraph's questions); ``Prefixes`` computes each head's
key/value cache once, when its first row is admitted, and drops it when its last row finishes.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evalharness.backends.hf.compat import accepts, returned_cache
from evalharness.backends.hf.kv_cache import SharedPrefix, layer_tensors
from evalharness.backends.hf.prefix import MIN_PREFIX, BatchSize, prefix_groups
from evalharness.backends.prompt_fitting import Encoder, common_prefix_len
from evalharness.core.requests import GenerateRequest

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
    decode_rows: BatchSize  # rows decoded at once
    prefix_memo: tuple[tuple[int, ...], Any] | None = None  # the last prefix's KV cache


@dataclass
class Row:
    """One request in flight: its prompt and what it has generated so far."""

    index: int  # position in the caller's request list
    request: GenerateRequest
    prompt: tuple[int, ...]
    truncated: bool
    truncated_document: bool
    generator: Any = None  # torch.Generator, only when sampling
    tokens: list[int] = field(default_factory=list)
    prefix: tuple[int, ...] = ()  # the few-shot head computed once for the row's cluster


def longest_first(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (-len(r.prompt), r.prompt))


def cluster_rows(rows: list[Row], reuse_prefixes: bool) -> list[list[Row]]:
    """Rows of one settings group in clusters, each cluster's few-shot head (set as every
    member's ``prefix``) computed once.

    One call may hold many tasks (a card run sends every generation request together), so the
    rows rarely share one head; grouped by their own heads (BBH's subtasks, GSM8K's exemplars,
    one SQuAD paragraph's questions), each group holds its prefix once. Rows with no long head
    in common with others come last, in one cluster.
    """
    if not reuse_prefixes:
        return [_with_prefix((), rows)]
    whole = shared_prefix([r.prompt for r in rows])
    if whole:
        return [_with_prefix(whole, rows)]
    by_prompt: dict[tuple[int, ...], list[Row]] = {}
    for row in rows:
        by_prompt.setdefault(row.prompt, []).append(row)
    clusters: list[list[Row]] = []
    loose: list[Row] = []
    for _, prompts in prefix_groups(sorted(by_prompt)):
        members = [row for prompt in prompts for row in by_prompt[prompt]]
        prefix = shared_prefix([r.prompt for r in members])
        if prefix:
            clusters.append(_with_prefix(prefix, longest_first(members)))
        else:
            loose += members
    clusters.sort(key=lambda c: -len(c[0].prompt))  # the longest rows first, as within a run
    if loose:
        clusters.append(_with_prefix(shared_prefix([r.prompt for r in loose]), longest_first(loose)))
    return clusters


def _with_prefix(prefix: tuple[int, ...], rows: list[Row]) -> list[Row]:
    for row in rows:
        row.prefix = prefix
    return rows


def keep_last(model: Any) -> dict[str, int]:
    """The vocabulary projection only at the last position, where the model allows it."""
    return {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}


@contextlib.contextmanager
def weight_first_projection(model: Any, device: str) -> Iterator[None]:
    """On a CPU, the vocabulary projection of a decode step as ``W @ x.T`` while inside.

    With a few rows and a large vocabulary, ``F.linear`` (``x @ W.T``) takes a slow path in the
    BLAS: for SmolLM2's 49,152 x 576 projection at 64 rows, 46 ms against 28 ms (on this project's
    2-core machines), bit-identical at 16 rows and more. A plain ``nn.Linear`` head only: any
    other (a bias, a quantised layer) keeps its own forward.
    """
    import torch

    head: Any = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not device.startswith("cpu") or type(head) is not torch.nn.Linear or head.bias is not None:
        yield
        return
    weight = head.weight

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        flat = hidden.reshape(-1, hidden.shape[-1])
        return (weight @ flat.T).T.reshape(*hidden.shape[:-1], weight.shape[0])

    head.forward = forward
    try:
        yield
    finally:
        del head.forward


def shared_prefix(prompts: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    """The prompts' common head, if long enough to pay; each row keeps at least one token."""
    if len(prompts) < 2:
        return ()
    length = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for other in prompts[1:]:
        length = min(length, common_prefix_len(first, other))
    return first[:length] if length >= MIN_PREFIX else ()


def prefix_cache(decoder: Decoder, prefix: tuple[int, ...]) -> Any:
    """KV cache of ``prefix`` (one row), kept while consecutive groups share it."""
    import torch

    memo = decoder.prefix_memo
    if memo is None or memo[0] != prefix:
        decoder.prefix_memo = None  # free the previous prefix before computing the next
        out = decoder.model(input_ids=torch.tensor([prefix], device=decoder.device), use_cache=True,
                            **keep_last(decoder.model))
        memo = (prefix, returned_cache(out))
        decoder.prefix_memo = memo
    return memo[1]


def prefix_layers(decoder: Decoder, prefix: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return layer_tensors(prefix_cache(decoder, prefix))


class Prefixes:
    """The caches of the prefixes that rows still waiting or in flight read, each held once."""

    def __init__(self, decoder: Decoder, rows: list[Row], routed: bool) -> None:
        self.decoder, self.routed = decoder, routed
        self.readers = Counter(row.prefix for row in rows)
        self.held: dict[tuple[int, ...], SharedPrefix] = {}

    def reading(self, rows: Sequence[Row]) -> SharedPrefix | None:
        """What ``rows`` attend to besides their own columns; None: nothing, or a prefix copied
        into each row (a model whose attention cannot be routed)."""
        import torch

        if not self.routed or not rows[0].prefix:
            return None
        for prefix in dict.fromkeys(row.prefix for row in rows):
            if prefix not in self.held:
                self.held[prefix] = SharedPrefix(prefix_layers(self.decoder, prefix), len(prefix))
                log.debug("generate: a %d-token prefix held once, shared by %d rows", len(prefix), self.readers[prefix])
        prefixes = [row.prefix for row in rows]
        if len(set(prefixes)) == 1:
            return SharedPrefix(self.held[prefixes[0]].layers, len(prefixes[0]))
        groups = [
            (self.held[p], torch.tensor([i for i, q in enumerate(prefixes) if q == p], device=self.decoder.device))
            for p in dict.fromkeys(prefixes)
        ]
        return SharedPrefix([], 0, groups=groups)

    def finished(self, row: Row) -> None:
        self.readers[row.prefix] -= 1
        if not self.readers[row.prefix]:
            self.held.pop(row.prefix, None)
