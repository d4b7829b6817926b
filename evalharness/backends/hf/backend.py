"""The Hugging Face transformers backend: one model load, batched scoring and generation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from evalharness.backends.response_cache import ResponseCache
from evalharness.backends.hf import loglikelihood
from evalharness.backends.hf.memory import auto_rows
from evalharness.backends.hf.prefix import BatchSize
from evalharness.backends.hf.loader import ModelConfig, load_model, weights_identity
from evalharness.backends.hf.tokenization import Encoder
from evalharness.core.requests import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    Request,
)

log = logging.getLogger(__name__)


def context_length(model: Any, tokenizer: Any) -> int:
    limits = [getattr(model.config, "max_position_embeddings", None)]
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if tokenizer_limit and tokenizer_limit < 1_000_000:  # transformers' "no limit" is ~1e30
        limits.append(tokenizer_limit)
    known = [int(x) for x in limits if x]
    return min(known) if known else 2048


class HFBackend:
    """``transformers`` causal LM on torch. ``batch_size`` counts sequences per forward pass."""

    def __init__(
        self,
        config: ModelConfig,
        batch_size: int | str = 8,
        max_length: int | None = None,
        reuse_prefixes: bool = True,
    ) -> None:
        self.config = config
        self.reuse_prefixes = reuse_prefixes
        self.cache: ResponseCache | None = None  # set by the runner (--cache / --no-cache)
        self.generation_prefix: tuple[tuple[int, ...], Any] | None = None  # last prefix KV cache
        self.model, self.tokenizer, self.device = load_model(config)
        self.encoder = Encoder(self.tokenizer)
        # "auto" sizes each batch from free memory and the length of its longest row.
        self.rows_per_batch: BatchSize = (
            auto_rows(self.model, self.device) if batch_size == "auto" else int(batch_size)
        )
        self.max_length = max_length or context_length(self.model, self.tokenizer)
        eos = config.model_args.get("eos_token_id", self.model.generation_config.eos_token_id)
        self.eos_token_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
        self.pad_id = int(self.tokenizer.pad_token_id or self.eos_token_ids[0] or 0)

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest]
    ) -> list[LoglikelihoodResponse]:
        if not requests:
            return []
        prepared = loglikelihood.prepare(self.encoder, requests, self.max_length)
        batches = loglikelihood.plan(prepared, self.rows_per_batch, self.reuse_prefixes)
        keys, results = self._cached(requests)
        computed = loglikelihood.score(
            self.model, prepared, batches, self.device, self.pad_id,
            on_batch=self._store(keys), skip=lambda indices: all(i in results for i in indices),
        )
        results.update(computed)
        return [results[i] for i in range(len(requests))]  # type: ignore[misc]

    def _cached(self, requests: Sequence[Request]) -> tuple[list[str], dict[int, Any]]:
        """Cache keys of the requests, and the responses already cached, by request index."""
        if self.cache is None:
            return [], {}
        keys = self.cache.keys(requests)
        found = self.cache.get_many(keys)
        return keys, {i: found[k] for i, k in enumerate(keys) if k in found}

    def _store(self, keys: list[str]) -> Callable[[list[int], Sequence[Any]], None] | None:
        if self.cache is None:
            return None
        cache = self.cache
        return lambda indices, responses: cache.put_many((keys[i], r) for i, r in zip(indices, responses))

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResponse]:
        if not requests:
            return []
        from evalharness.backends.hf import generation

        keys, cached = self._cached(requests)
        return generation.generate(self, requests, cached, self._store(keys))

    def fingerprint(self) -> dict[str, Any]:
        return {
            "backend": "hf",
            "model": self.config.name_or_path,
            "weights": weights_identity(self.config.name_or_path, self.model),
            "architecture": type(self.model).__name__,
            "tokenizer": type(self.tokenizer).__name__,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "device": self.device,
            "max_length": self.max_length,
            "prefix_reuse": self.reuse_prefixes,
            "eos_token_ids": list(self.eos_token_ids),
            "model_args": dict(sorted(self.config.model_args.items())),
        }
