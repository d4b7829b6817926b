"""Slots of a running decode batch: newcomers written over finished rows equal the rows
they would be after dropping the finished ones and joining the newcomers."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from evalharness.backends.hf.kv_cache import GrowingLayer, growing_cache, layer_tensors
from evalharness.backends.hf.slots import Slots

CONFIG = LlamaConfig(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, hidden_size=8, vocab_size=16)


def batch(lengths: list[int], width: int, seed: int) -> Slots:
    """Rows with ``lengths`` real columns, left-padded to ``width``; padding holds garbage."""
    generator = torch.Generator().manual_seed(seed)
    rows = len(lengths)
    layers = [
        (torch.randn(rows, 1, width, 4, generator=generator), torch.randn(rows, 1, width, 4, generator=generator))
        for _ in range(CONFIG.num_hidden_layers)
    ]
    mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
    positions = torch.tensor([[100 * seed + n] for n in lengths])
    return Slots(growing_cache(CONFIG, layers), mask, positions, [10 * seed + i for i in range(rows)])


def rows(slots: Slots) -> list[tuple[list[torch.Tensor], int, int]]:
    """Each row as what attention sees of it: its unmasked keys and values, position and token."""
    seen = []
    for i in range(len(slots)):
        live = slots.mask[i].bool()
        tensors = [t[i][:, live] for keys, values in layer_tensors(slots.cache) for t in (keys, values)]
        seen.append((tensors, int(slots.positions[i]), slots.tokens[i]))
    return seen


def same(a: list[tuple[list[torch.Tensor], int, int]], b: list[tuple[list[torch.Tensor], int, int]]) -> bool:
    return len(a) == len(b) and all(
        pa == pb and ta == tb and all(torch.equal(x, y) for x, y in zip(xa, xb, strict=True))
        for (xa, pa, ta), (xb, pb, tb) in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("newcomer_width", [3, 9], ids=["shorter", "longer-than-the-batch"])
def test_place_equals_select_then_join(newcomer_width: int) -> None:
    running, newcomers = batch([6, 2, 4, 5], 6, seed=1), batch([3, newcomer_width], newcomer_width, seed=2)
    before, incoming = rows(running), rows(newcomers)
    expected = [before[0], before[3], *incoming]  # rows 1 and 2 finished
    got = list(before)
    got[2], got[1] = incoming  # what place() should leave: the newcomers in the finished slots
    assert running.can_place()
    running.place(newcomers, [2, 1])
    assert same(rows(running), got)
    assert running.mask.shape[1] == max(6, newcomer_width)
    # The same rows as the copying path (select, then join), in another order.
    reference, others = batch([6, 2, 4, 5], 6, seed=1), batch([3, newcomer_width], newcomer_width, seed=2)
    reference.select([0, 3])
    reference.join(others)
    assert same(rows(reference), expected)
    assert same([rows(running)[i] for i in (0, 3, 2, 1)], expected)
    assert all(isinstance(layer, GrowingLayer) for layer in running.cache.layers)


def test_place_trims_columns_no_row_reads() -> None:
    running = batch([8, 2], 8, seed=3)
    running.place(batch([2], 2, seed=4), [0])  # the only long row is replaced: 6 of 8 columns are dead
    assert running.mask.shape[1] == 2
    assert bool(running.mask.all())
