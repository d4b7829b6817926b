"""The Hugging Face transformers backend: one model load, batched scoring and generation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from evalharness.hf import loglikelihood
from evalharness.hf.loader import ModelConfig, load_model, weights_identity
from evalharness.hf.tokenization import Encoder
from evalharness.requests import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
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
        self, config: ModelConfig, batch_size: int = 8, max_length: int | None = None
    ) -> None:
        self.config = config
        self.batch_size = batch_size
        self.model, self.tokenizer, self.device = load_model(config)
        self.encoder = Encoder(self.tokenizer)
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
        return loglikelihood.score(
            self.model, prepared, self.batch_size, self.device, self.pad_id
        )

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResponse]:
        if not requests:
            return []
        from evalharness.hf import generation

        return generation.generate(self, requests)

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
            "eos_token_ids": list(self.eos_token_ids),
            "model_args": dict(sorted(self.config.model_args.items())),
        }
