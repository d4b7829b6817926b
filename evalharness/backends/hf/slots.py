"""Rows of a running decode batch: join newcomers, drop finished rows, trim dead padding.

Continuous batching needs four operations on a left-padded batch (key/value cache, attention
mask, next position per row) that ``transformers`` caches do not offer directly: concatenating
two batches of different lengths (the shorter is left-padded with masked zeros), writing
newcomers over finished rows in place, selecting rows, and cutting leading columns that every
remaining row masks out (so the cache stays about as long as its longest live row, not as long as
the run). Masked positions get zero attention weight, so padding changes no output beyond float
rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalharness.backends.hf.kv_cache import GrowingLayer, layer_tensors, replace_layer

if TYPE_CHECKING:
    import torch


@dataclass
class Slots:
    """A left-padded batch in flight: ``cache`` [rows, heads, length, dim] per layer, ``mask``
    [rows, length], ``positions`` [rows, 1] (the next token's position), ``tokens`` [rows]
    (the next input token of each row). With a prefix held once (``kv_cache.SharedPrefix``) the
    columns are the rows' own tokens after it; positions still count from the prompt's start."""

    cache: Any
    mask: torch.Tensor
    positions: torch.Tensor
    tokens: list[int]

    def __len__(self) -> int:
        return len(self.tokens)

    def select(self, keep: list[int]) -> None:
        import torch

        if len(keep) == len(self.tokens):
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.positions = self.mask[index], self.positions[index]
        self.tokens = [self.tokens[i] for i in keep]
        self.trim()

    def trim(self, at_least: float = 0.0) -> None:
        """Drop leading columns that no remaining row attends to, if they are more than
        ``at_least`` of the columns (each trim copies the whole cache)."""
        live = self.mask.any(dim=0).nonzero()
        start = int(live[0]) if len(live) else 0
        if start == 0 or start <= at_least * self.mask.shape[1]:
            return
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:  # one layer at a time: the old copy is freed before the next
            replace_layer(layer, layer.keys[:, :, start:], layer.values[:, :, start:])

    def widen(self, length: int) -> None:
        """Left-pads every row with masked zero columns up to ``length`` columns."""
        missing = length - self.mask.shape[1]
        if missing <= 0:
            return
        # One layer at a time, so the batch's cache is never held twice.
        for layer, (keys, values) in zip(self.cache.layers, layer_tensors(self.cache), strict=True):
            replace_layer(layer, _left_pad(keys, 2, length), _left_pad(values, 2, length))
        self.mask = _left_pad(self.mask, 1, length)

    def join(self, other: Slots) -> None:
        """Append ``other``'s rows; the shorter batch is left-padded to the longer one."""
        import torch

        length = max(self.mask.shape[1], other.mask.shape[1])
        # Both sides padded inside one concatenation (not widen() first, which would copy the
        # batch's cache once more); one layer at a time, so it is never held twice.
        for layer, (keys, values) in zip(self.cache.layers, layer_tensors(other.cache), strict=True):
            replace_layer(
                layer,
                torch.cat([_left_pad(layer.keys, 2, length), _left_pad(keys, 2, length)]),
                torch.cat([_left_pad(layer.values, 2, length), _left_pad(values, 2, length)]),
            )
        self.mask = torch.cat([_left_pad(self.mask, 1, length), _left_pad(other.mask, 1, length)])
        self.positions = torch.cat([self.positions, other.positions])
        self.tokens = self.tokens + other.tokens

    def can_place(self) -> bool:
        """Whether rows can be written in place: every layer's content is a view of its own buffer."""
        return all(isinstance(layer, GrowingLayer) for layer in self.cache.layers)

    def place(self, other: Slots, at: Sequence[int]) -> None:
        """Writes ``other``'s first ``len(at)`` rows over the (finished) rows ``at``, aligned at
        the last column like every row: unlike ``select`` then ``join``, the batch's cache is not
        copied (only when a newcomer is longer than the batch, to widen it)."""
        import torch

        self.widen(other.mask.shape[1])
        length, count = self.mask.shape[1], len(at)
        index = torch.tensor(list(at), dtype=torch.long, device=self.mask.device)
        for layer, (keys, values) in zip(self.cache.layers, layer_tensors(other.cache), strict=True):
            layer.keys[index] = _left_pad(keys[:count], 2, length)  # writes through to the layer's buffer
            layer.values[index] = _left_pad(values[:count], 2, length)
        self.mask[index] = _left_pad(other.mask[:count], 1, length)
        self.positions[index] = other.positions[:count]
        for slot, token in zip(at, other.tokens, strict=False):
            self.tokens[slot] = token
        self.trim(at_least=0.25)


def _left_pad(x: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """``x`` with zeros before it along ``dim`` up to ``length``."""
    import torch

    missing = length - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)
