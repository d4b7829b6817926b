"""Packed scoring rows: inputs that share a head laid out once in one row, on the real tiny models.

A pack must change no number beyond float rounding: each member's tokens see exactly what they
would see in a row of their own (the head and themselves), at their own positions.
"""

from __future__ import annotations

import pytest

from evalharness.backends.hf import loglikelihood
from evalharness.backends.hf.prefix import Pack, pack_rows, plan_batches
from evalharness.core.prompt_render import PromptRenderer
from evalharness.data.source import DataSource
from evalharness.run.planning import plan
from evalharness.run.settings import RunConfig
from tests.conftest import DATA, TINY_LLAMA


def _requests(tasks: tuple[str, ...], limit: int) -> list:
    planned = plan(RunConfig(tasks=tasks, limit=limit), DataSource(DATA), PromptRenderer())
    return [r for p in planned for r in p.requests]


def test_mask_lets_each_member_see_the_head_and_itself_only():
    import torch

    # One row: head of 2, member 1 of 2 tokens, member 2 of 1 token, then a pad; a 1-token prefix.
    segments = torch.tensor([[0, 0, 1, 1, 2, -1]])
    mask = loglikelihood._packed_mask(segments, 1, torch.float32)
    visible = (mask[0, 0] == 0).int().tolist()
    assert visible == [
        # prefix, head, head, m1, m1, m2, pad
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0, 1, 0],  # member 2 skips member 1's tokens
        [1, 1, 1, 0, 0, 0, 1],  # padding sees no member, and at least itself: no NaN
    ]


def test_packs_save_tokens_and_never_cover_a_scored_position():
    a, b = (1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 5, 6, 7, 10, 11)
    unrelated = (20, 21, 22, 23)
    scored_from = {a: 8, b: 6, unrelated: 3}
    packs = pack_rows(sorted(scored_from), scored_from, 0)
    assert packs == [Pack(6, (a, b)), Pack(0, (unrelated,))]  # head capped at b's first scored output
    assert packs[0].length == 6 + 3 + 3 and packs[0].starts(0) == [6, 9]
    # Sharing a single token saves less than a mask costs: no pack.
    c = (1, 30, 31, 32, 33)
    assert all(len(p.members) == 1 for p in pack_rows([a, c], {a: 8, c: 4}, 0))
    # Without packing (an attention that takes no custom mask), one input per row.
    assert all(len(p.members) == 1 for batch in plan_batches(scored_from, 4, pack=False) for p in batch.packs)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_scores_equal_one_row_per_input(attention):
    from evalharness.backends.hf import HFBackend
    from evalharness.backends.hf.loader import ModelConfig

    config = ModelConfig(str(TINY_LLAMA), dtype="float32", device="cpu", model_args={"attn_implementation": attention})
    backend = HFBackend(config, batch_size=4)
    # HellaSwag's endings, ARC's choices, WinoGrande's two sentences (shared continuation after
    # the blank), and TruthfulQA MC2's choices under its cached 6-shot prefix.
    requests = _requests(("hellaswag", "arc_challenge", "winogrande", "truthfulqa_mc2"), 6)
    prepared = loglikelihood.prepare(backend.encoder, requests, backend.max_length)
    batches = loglikelihood.plan(prepared, 4, True, loglikelihood.packing_supported(backend.model))
    assert any(len(p.members) > 1 for b in batches if not b.prefix for p in b.packs)
    assert any(len(p.members) > 1 for b in batches if b.prefix for p in b.packs)  # packs under a cached prefix
    packed = backend.loglikelihood(requests)
    backend.reuse_prefixes = False
    alone = backend.loglikelihood(requests)
    assert max(abs(x.logprob - y.logprob) for x, y in zip(packed, alone, strict=True)) < 1e-5
    assert [x.is_greedy for x in packed] == [y.is_greedy for y in alone]
    assert [x.num_tokens for x in packed] == [y.num_tokens for y in alone]
