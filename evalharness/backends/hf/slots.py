"""Rows of a running decode batch: join newcomers, drop finished rows, trim dead padding.

Continuous batching needs three operations on a left-padded batch (key/value cache, attention
mask, next position per row) that ``transformers`` caches do not offer directly: concatenating
two batches of different lengths (the shorter is left-padded with masked zeros), selecting rows,
and cutting leading columns that every remaining row masks out (so the cache stays as long as its
longest live row, not as long as the run). Masked positions get zero attention weight, so padding
changes no output beyond float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalharness.backends.hf.kv_cache import layer_tensors, replace_layer

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

    def trim(self) -> None:
        """Drop leading columns that no remaining row attends to."""
        live = self.mask.any(dim=0).nonzero()
        start = int(live[0]) if len(live) else 0
        if start == 0:
            return
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:  # one layer at a time: the old copy is freed before the next
            replace_layer(layer, layer.keys[:, :, start:], layer.values[:, :, start:])

    def join(self, other: Slots) -> None:
        """Append ``other``'s rows; the shorter batch is left-padded to the longer one."""
        import torch

        length = max(self.mask.shape[1], other.mask.shape[1])

        def pad(x: torch.Tensor, dim: int) -> torch.Tensor:
            missing = length - x.shape[dim]
            if missing == 0:
                return x
            shape = list(x.shape)
            shape[dim] = missing
            return torch.cat([x.new_zeros(shape), x], dim=dim)

        # One layer at a time, so the batch's cache is never held twice.
        for layer, (keys, values) in zip(self.cache.layers, layer_tensors(other.cache), strict=True):
            replace_layer(layer, torch.cat([pad(layer.keys, 2), pad(keys, 2)]), torch.cat([pad(layer.values, 2), pad(values, 2)]))
        self.mask = torch.cat([pad(self.mask, 1), pad(other.mask, 1)])
        self.positions = torch.cat([self.positions, other.positions])
        self.tokens = self.tokens + other.tokens
