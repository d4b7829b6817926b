"""Key/value caches for the decode loop: grown in place, and a few-shot prefix held once.

Two costs dominated generation with ``transformers``' ``DynamicCache`` on long few-shot prompts:

- ``DynamicLayer.update`` concatenates, so every decode step copies the whole cache of every
  layer (for GSM8K's 8-shot prompt on SmolLM2-135M at 8 rows, ~400 MB per step, more than the
  weights the step reads). ``GrowingLayer`` keeps spare columns and writes the new token into them.
- The shared few-shot prefix was copied into every row, so its keys and values were held and
  read once per row. ``SharedPrefix`` holds them once ([1, kv heads, prefix, dim] per layer) and
  ``prefix_attention`` attends to them for all rows in one matrix product, then merges that with
  each row's own (suffix) attention by the usual running-maximum softmax rule (on a CPU, two calls
  of PyTorch's fused attention kernel merged by their log-sum-exps). The model sees
  only the suffix in its cache; positions are passed explicitly, so rotary embeddings are those
  of the full prompt.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transformers.cache_utils import DynamicLayer

if TYPE_CHECKING:
    import torch

ATTENTION = "evalharness_shared_prefix"
HEADROOM = 128  # spare columns per reallocation: one copy per 128 decode steps, not one per step
SCORE_BLOCK = 1 << 24  # prefix scores held at once (64 MB in float32): long prefills go in row blocks
FUSED = True  # on a CPU, attend through PyTorch's fused kernel where it exists (tests switch it off)


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys/values are views of a buffer with spare columns."""

    def __init__(self, headroom: int = HEADROOM) -> None:
        super().__init__()
        self.headroom = headroom
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def adopt(self, keys: torch.Tensor, values: torch.Tensor) -> GrowingLayer:
        """Takes ``keys``/``values`` ([rows, heads, length, dim]) as the layer's content."""
        self.device, self.is_initialized = keys.device, True
        self._key_buffer, self._value_buffer = self._room(keys), self._room(values)
        self._view(keys.shape[-2])
        return self

    def _room(self, tensor: torch.Tensor, incoming: int = 0) -> torch.Tensor:
        """A copy of ``tensor`` with room for ``incoming`` columns and the headroom after them."""
        shape = list(tensor.shape)
        length = shape[-2]
        shape[-2] = length + incoming + self.headroom
        buffer = tensor.new_empty(shape)
        buffer[..., :length, :] = tensor
        return buffer

    def _view(self, length: int) -> None:
        assert self._key_buffer is not None and self._value_buffer is not None
        self.keys = self._key_buffer[..., :length, :]
        self.values = self._value_buffer[..., :length, :]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        length = self.get_seq_length()
        if self._key_buffer is None or length == 0:
            self.adopt(key_states, value_states)
            assert self.keys is not None and self.values is not None
            return self.keys, self.values
        end = length + key_states.shape[-2]
        assert self._value_buffer is not None
        if end > self._key_buffer.shape[-2]:
            assert self.keys is not None and self.values is not None
            incoming = key_states.shape[-2]
            self._key_buffer, self._value_buffer = self._room(self.keys, incoming), self._room(self.values, incoming)
        assert self._key_buffer is not None and self._value_buffer is not None
        self._key_buffer[..., length:end, :] = key_states
        self._value_buffer[..., length:end, :] = value_states
        self._view(end)
        assert self.keys is not None and self.values is not None
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._key_buffer is None or self._value_buffer is None:
            return
        length = self.get_seq_length()
        self._key_buffer, self._value_buffer = self._key_buffer[indices], self._value_buffer[indices]
        self._view(length)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.keys is not None and self.values is not None:
            self.adopt(self.keys.repeat_interleave(repeats, dim=0), self.values.repeat_interleave(repeats, dim=0))


def growing_cache(config: Any, layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None, headroom: int = HEADROOM) -> Any:
    """A ``DynamicCache`` for ``config`` whose full-attention layers grow in place (sliding-window
    layers stay as ``transformers`` made them); ``layers`` is its initial content, if any."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            cache.layers[i] = GrowingLayer(headroom)
    if layers is not None:
        replace_content(cache, layers)
    return cache


def layer_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (keys, values)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def replace_layer(layer: Any, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Gives one cache layer new content, keeping the layer object (and its kind). Callers
    replace layer by layer, so only one layer's old and new tensors are alive at once."""
    if isinstance(layer, GrowingLayer):
        layer.adopt(keys, values)
    elif not layer.is_initialized:
        layer.update(keys, values)
    else:
        layer.keys, layer.values = keys, values


def replace_content(cache: Any, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Gives each layer of ``cache`` new content (``layers``: views, or a cache being built)."""
    for layer, (keys, values) in zip(cache.layers, layers, strict=True):
        replace_layer(layer, keys, values)


@dataclass
class SharedPrefix:
    """Keys and values of a prompt head shared by every row, one row per layer."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]  # [1, kv heads, length, dim]
    length: int
    calls: int = 0  # attention calls that read it: proves the model routes through prefix_attention
    # Rows reading different prefixes (several tasks decoding in one batch): each prefix and the
    # indices of its rows; ``layers``/``length`` are then unused.
    groups: list[tuple[SharedPrefix, torch.Tensor]] | None = None


def prefix_attention(
    module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
    shared_prefix: SharedPrefix | None = None, **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention over [shared prefix] + [each row's cached suffix]. ``attention_mask`` is a 4-D
    boolean mask over the suffix columns only ([rows, 1, queries, suffix])."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if shared_prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    shared_prefix.calls += 1
    if shared_prefix.groups is not None:
        rows, heads, queries, dim = query.shape
        out = query.new_empty(rows, queries, heads, dim)
        for prefix, index in shared_prefix.groups:
            mask = None if attention_mask is None else attention_mask[index]
            out[index] = prefix_attention(module, query[index], key[index], value[index], mask, scaling, dropout, prefix)[0]
        return out, None
    if query.device.type == "cpu" and FUSED and _fused_kernel() is not None:
        return _fused_prefix_attention(module, query, key, value, attention_mask, scaling, shared_prefix), None
    prefix_keys, prefix_values = shared_prefix.layers[module.layer_idx]
    rows, heads, queries, dim = query.shape
    block = max(1, SCORE_BLOCK // (heads * queries * shared_prefix.length))
    if rows > block:  # a prefill of many rows: bounded memory, same result row by row
        parts = [
            prefix_attention(module, query[i : i + block], key[i : i + block], value[i : i + block],
                             None if attention_mask is None else attention_mask[i : i + block],
                             scaling, dropout, shared_prefix, **kwargs)[0]
            for i in range(0, rows, block)
        ]
        return torch.cat(parts), None
    kv_heads = key.shape[1]
    group = heads // kv_heads  # query heads per key/value head, as in repeat_kv
    scale = scaling if scaling is not None else dim**-0.5
    # [rows, kv heads, group * queries, dim]: query heads that share a key/value head side by side.
    packed = query.reshape(rows, kv_heads, group * queries, dim)
    # The prefix is the same for every row: one [kv heads, rows*group*queries, prefix] product.
    flat = packed.transpose(0, 1).reshape(kv_heads, rows * group * queries, dim)
    head_scores = torch.matmul(flat, prefix_keys[0].transpose(-1, -2)).float() * scale
    head_scores = head_scores.view(kv_heads, rows, group * queries, -1).transpose(0, 1)
    own_scores = torch.matmul(packed, key.transpose(-1, -2)).float() * scale
    if attention_mask is not None:
        allowed = attention_mask.view(rows, 1, 1, queries, -1)
        own_scores = own_scores.view(rows, kv_heads, group, queries, -1).masked_fill(~allowed, float("-inf"))
        own_scores = own_scores.view(rows, kv_heads, group * queries, -1)
    # One maximum over both parts; the prefix part is never fully masked, so it is finite.
    peak = torch.maximum(head_scores.amax(dim=-1, keepdim=True), own_scores.amax(dim=-1, keepdim=True))
    head_weights, own_weights = (head_scores - peak).exp(), (own_scores - peak).exp()
    total = head_weights.sum(dim=-1, keepdim=True) + own_weights.sum(dim=-1, keepdim=True)
    head_flat = head_weights.transpose(0, 1).reshape(kv_heads, rows * group * queries, -1).to(value.dtype)
    head_out = torch.matmul(head_flat, prefix_values[0]).view(kv_heads, rows, group * queries, dim).transpose(0, 1)
    own_out = torch.matmul(own_weights.to(value.dtype), value)
    out = ((head_out.float() + own_out.float()) / total).to(query.dtype)
    out = out.reshape(rows, heads, queries, dim)
    return out.transpose(1, 2).contiguous(), None


@functools.cache
def _fused_kernel() -> Any:
    """PyTorch's fused CPU attention that also returns each query's log-sum-exp (None if absent)."""
    import torch

    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _fused_prefix_attention(
    module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, scaling: float | None, shared_prefix: SharedPrefix,
) -> torch.Tensor:
    """``prefix_attention`` as two fused kernel calls, merged by their log-sum-exps (as in
    flash-decoding): no score matrix is materialised, so prefills need no row blocks."""
    import torch

    kernel = _fused_kernel()
    prefix_keys, prefix_values = shared_prefix.layers[module.layer_idx]
    rows, heads, queries, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    packed = query.reshape(rows, kv_heads, group * queries, dim)  # query heads of one key/value head together
    flat = packed.transpose(0, 1).reshape(1, kv_heads, rows * group * queries, dim)
    head_out, head_lse = kernel(flat, prefix_keys, prefix_values, scale=scale)
    head_out = head_out.reshape(kv_heads, rows, group * queries, dim).transpose(0, 1)
    head_lse = head_lse.reshape(kv_heads, rows, group * queries).transpose(0, 1)
    additive = None
    if attention_mask is not None:  # [rows, 1, queries, own] booleans -> additive, repeated per query head
        blocked = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device)
        blocked.masked_fill_(~attention_mask, float("-inf"))
        additive = blocked.unsqueeze(2).expand(rows, 1, group, queries, -1).reshape(rows, 1, group * queries, -1)
    own_out, own_lse = kernel(packed, key, value, attn_mask=additive, scale=scale)
    if attention_mask is not None:
        # A padding query may see none of its own columns; the kernel then returns 0 for its
        # log-sum-exp, which must read as -inf (no weight) in the merge.
        sees = attention_mask.any(dim=-1).unsqueeze(2).expand(rows, 1, group, queries).reshape(rows, 1, group * queries)
        own_lse = own_lse.masked_fill(~sees, float("-inf"))
    peak = torch.maximum(head_lse, own_lse)  # finite: every query sees the whole prefix
    head_weight, own_weight = (head_lse - peak).exp().unsqueeze(-1), (own_lse - peak).exp().unsqueeze(-1)
    merged = (head_out.float() * head_weight + own_out.float() * own_weight) / (head_weight + own_weight)
    return merged.to(query.dtype).reshape(rows, heads, queries, dim).transpose(1, 2).contiguous()


@functools.cache
def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, prefix_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # only for prompts without a shared prefix


@contextlib.contextmanager
def attention_with_prefix(model: Any) -> Iterator[bool]:
    """Routes the model's attention through ``prefix_attention`` while inside; yields whether the
    model allows it (sdpa models following ``transformers``' attention interface)."""
    original = getattr(model.config, "_attn_implementation", None)
    if original != "sdpa" or not hasattr(model, "set_attn_implementation"):
        yield False
        return
    _register()
    try:
        model.set_attn_implementation(ATTENTION)
    except (ValueError, TypeError, ImportError):
        yield False
        return
    try:
        yield model.config._attn_implementation == ATTENTION
    finally:
        model.set_attn_implementation(original)
