"""The decode loop's caches: a layer that grows in place and attention over a prefix held once.

Both are checked against what they replace (``torch.cat`` growth, and ``transformers``' SDPA
attention over the prefix copied into every row), on real tensors and on a real tiny model.
"""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from evalharness.backends.hf import kv_cache
from evalharness.backends.hf.backend import HFBackend
from evalharness.backends.hf.kv_cache import GrowingLayer, SharedPrefix, attention_with_prefix, prefix_attention
from evalharness.backends.hf.loader import ModelConfig
from evalharness.core.requests import GenerateRequest, SamplingParams
from tests.conftest import TINY_LLAMA


class Heads(torch.nn.Module):
    """What the attention function reads from its module: the layer index and the GQA group."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.layer_idx, self.num_key_value_groups, self.is_causal = 0, groups, True


def sdpa_over_full_rows(
    query: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor], own: tuple[torch.Tensor, torch.Tensor],
    own_mask: torch.Tensor,
) -> torch.Tensor:
    """The reference: the prefix copied into every row, one SDPA call over [prefix, own]."""
    rows, heads = query.shape[:2]
    groups = heads // own[0].shape[1]
    keys = torch.cat([prefix[0].expand(rows, -1, -1, -1), own[0]], dim=2).repeat_interleave(groups, dim=1)
    values = torch.cat([prefix[1].expand(rows, -1, -1, -1), own[1]], dim=2).repeat_interleave(groups, dim=1)
    head_mask = torch.ones((*own_mask.shape[:3], prefix[0].shape[2]), dtype=torch.bool)
    mask = torch.cat([head_mask, own_mask], dim=-1)
    out = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=mask)
    return out.transpose(1, 2)


@pytest.mark.parametrize("fused", [True, False], ids=["fused-kernel", "torch-ops"])
@pytest.mark.parametrize(("queries", "score_block"), [(1, kv_cache.SCORE_BLOCK), (5, kv_cache.SCORE_BLOCK), (5, 1)])
def test_prefix_attention_equals_sdpa_over_copied_prefix(
    queries: int, score_block: int, fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decode (one query) and prefill (causal, left-padded rows, padding queries that see none
    of their own columns), with grouped-query heads; a prefill too big for one block of scores goes
    row by row. Both implementations: the fused CPU kernel and plain torch operations."""
    monkeypatch.setattr(kv_cache, "SCORE_BLOCK", score_block)
    monkeypatch.setattr(kv_cache, "FUSED", fused)
    gen = torch.Generator().manual_seed(0)
    rows, heads, kv_heads, dim, prefix_len, own_len = 3, 6, 2, 16, 40, 9
    query = torch.randn(rows, heads, queries, dim, generator=gen)
    prefix = (torch.randn(1, kv_heads, prefix_len, dim, generator=gen), torch.randn(1, kv_heads, prefix_len, dim, generator=gen))
    own = (torch.randn(rows, kv_heads, own_len, dim, generator=gen), torch.randn(rows, kv_heads, own_len, dim, generator=gen))
    padding = torch.ones(rows, own_len, dtype=torch.bool)
    padding[1, :4 + queries] = False  # a left-padded row: with 5 queries, all its own columns are padding
    padding[2, :own_len - queries] = False  # a row whose own part is only its queries
    causal = torch.ones(queries, own_len, dtype=torch.bool).tril(own_len - queries)
    mask = padding[:, None, None, :] & causal[None, None]
    got, _ = prefix_attention(Heads(heads // kv_heads), query, *own, mask, shared_prefix=SharedPrefix([prefix], prefix_len))
    torch.testing.assert_close(got, sdpa_over_full_rows(query, prefix, own, mask), rtol=1e-5, atol=1e-5)


def test_growing_layer_matches_concatenation_across_reallocations() -> None:
    gen = torch.Generator().manual_seed(1)
    grown, concatenated = GrowingLayer(headroom=3), DynamicLayer()
    for width in (5, 1, 1, 1, 1, 2, 1, 4):  # crosses the spare room several times
        keys, values = torch.randn(2, 2, width, 4, generator=gen), torch.randn(2, 2, width, 4, generator=gen)
        got, want = grown.update(keys, values), concatenated.update(keys, values)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert grown.get_seq_length() == 16
    index = torch.tensor([1])
    grown.batch_select_indices(index)
    concatenated.batch_select_indices(index)
    step = torch.randn(1, 2, 1, 4, generator=gen)
    assert torch.equal(grown.update(step, step)[0], concatenated.update(step, step)[0])


@pytest.mark.skipif(not TINY_LLAMA.is_dir(), reason="tiny-random-llama2 not found")
def test_generation_holds_the_few_shot_prefix_once(caplog: pytest.LogCaptureFixture) -> None:
    """A long shared head is held once and read through prefix_attention (the log says so, and
    the model is routed back to SDPA afterwards); outputs equal the copied-prefix path's."""
    backend = HFBackend(ModelConfig(str(TINY_LLAMA), device="cpu"), batch_size=3)
    head = "Question: what is two plus two? Answer: four. " * 8
    requests = [
        GenerateRequest(head + tail, sampling=SamplingParams(12, ignore_eos=True))
        for tail in ("Question: one plus one?", "Question: three?", "Q", "Question: and five plus five?")
    ]
    with caplog.at_level("DEBUG", logger="evalharness.backends.hf"):
        shared = backend.generate(requests)
    assert any("held once" in message for message in caplog.messages)
    assert backend.model.config._attn_implementation == "sdpa"
    with attention_with_prefix(backend.model) as routed:
        assert routed
    backend.reuse_prefixes = False
    assert [r.text for r in backend.generate(requests)] == [r.text for r in shared]


@pytest.mark.skipif(not TINY_LLAMA.is_dir(), reason="tiny-random-llama2 not found")
def test_generation_holds_each_tasks_prefix_once(caplog: pytest.LogCaptureFixture) -> None:
    """One call may mix tasks (a card run sends all its generation requests together): rows are
    clustered by their own few-shot head, each head held once; outputs equal the unshared path's."""
    backend = HFBackend(ModelConfig(str(TINY_LLAMA), device="cpu"), batch_size=4)
    heads = ["Question: what is two plus two? Answer: four. " * 6, "Sort these words: b a c. Answer: a b c. " * 6]
    tails = ("Question: one plus one?", "Question: three?", "Q")
    requests = [GenerateRequest(head + tail, sampling=SamplingParams(8, ignore_eos=True)) for head in heads for tail in tails]
    requests.append(GenerateRequest("A loose prompt with no exemplars", sampling=SamplingParams(8, ignore_eos=True)))
    with caplog.at_level("DEBUG", logger="evalharness.backends.hf"):
        clustered = backend.generate(requests)
    held = [m for m in caplog.messages if "held once" in m]
    assert len(held) == 2 and all("shared by 3 rows" in m for m in held)
    # Both tasks' rows decode in one batch (4 rows at once), each reading its own prefix.
    assert sum("requests, up to" in m for m in caplog.messages) == 2  # the prefixed rows, then the loose one
    backend.reuse_prefixes = False
    assert [r.text for r in backend.generate(requests)] == [r.text for r in clustered]


@pytest.mark.parametrize("fused", [True, False], ids=["fused-kernel", "torch-ops"])
def test_prefix_attention_with_a_prefix_per_row_group(fused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of two tasks in one decode batch, each reading its own prefix (of another length)."""
    monkeypatch.setattr(kv_cache, "FUSED", fused)
    gen = torch.Generator().manual_seed(2)
    rows, heads, kv_heads, dim, own_len = 4, 6, 2, 16, 7
    prefixes = [
        (torch.randn(1, kv_heads, n, dim, generator=gen), torch.randn(1, kv_heads, n, dim, generator=gen)) for n in (40, 23)
    ]
    query = torch.randn(rows, heads, 1, dim, generator=gen)
    own = (torch.randn(rows, kv_heads, own_len, dim, generator=gen), torch.randn(rows, kv_heads, own_len, dim, generator=gen))
    mask = torch.ones(rows, 1, 1, own_len, dtype=torch.bool)
    mask[2, ..., :3] = False
    readers = [torch.tensor([0, 2]), torch.tensor([1, 3])]
    shared = SharedPrefix([], 0, groups=[(SharedPrefix([p], p[0].shape[2]), i) for p, i in zip(prefixes, readers, strict=True)])
    got, _ = prefix_attention(Heads(heads // kv_heads), query, *own, mask, shared_prefix=shared)
    for prefix, index in zip(prefixes, readers, strict=True):
        want = sdpa_over_full_rows(query[index], prefix, (own[0][index], own[1][index]), mask[index])
        torch.testing.assert_close(got[index], want, rtol=1e-5, atol=1e-5)
