"""Small differences between transformers versions, in one place."""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any


@cache
def _cache_argument(forward: Any) -> str:
    # transformers 5.2x renamed ``past_key_values`` to ``cache``; older and remote models keep it.
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def cache_kwargs(module: Any, cache: Any) -> dict[str, Any]:
    return {_cache_argument(type(module).forward): cache}


def accepts(module: Any, argument: str) -> bool:
    return argument in inspect.signature(type(module).forward).parameters


def returned_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
