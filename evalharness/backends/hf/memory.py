"""``--batch-size auto``: size batches from free memory and an estimate of a row's footprint.

On a CPU, going past the machine's memory gets the process killed rather than raising, so the
size is decided before running; on a GPU an out-of-memory error also halves the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_ROWS = 128
SAFETY = 0.5  # use at most half of what is free: allocator slack, fragmentation, other processes


def available_bytes(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def row_bytes(config: Any, length: int, element_bytes: int, kept_logits: int = 1) -> int:
    """Peak bytes for one row of ``length`` tokens: KV cache, the widest activation, logits."""
    hidden = int(getattr(config, "hidden_size", 4096))
    layers = int(getattr(config, "num_hidden_layers", 32))
    heads = int(getattr(config, "num_attention_heads", 32))
    kv_heads = int(getattr(config, "num_key_value_heads", heads) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    intermediate = int(getattr(config, "intermediate_size", 4 * hidden))
    vocab = int(getattr(config, "vocab_size", 32000))
    kv_cache = 2 * layers * length * kv_heads * head_dim * element_bytes
    activations = 4 * length * max(hidden, intermediate) * element_bytes
    logits = kept_logits * vocab * 4 * 2  # float32 logits and their log-softmax
    return kv_cache + activations + logits


def auto_rows(model: Any, device: str, cap: int = MAX_ROWS) -> Callable[[int], int]:
    """Rows per batch (at most ``cap``) for a batch whose longest row has the given length."""
    budget = available_bytes(device) * SAFETY
    element = model.dtype.itemsize if hasattr(model.dtype, "itemsize") else 4

    def rows(length: int) -> int:
        return max(1, min(cap, int(budget // row_bytes(model.config, length, element))))

    log.info("batch size from memory: %.1f GiB budget; %d rows at 1,024 tokens", budget / 2**30, rows(1024))
    return rows
