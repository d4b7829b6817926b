"""The Hugging Face transformers backend: one model load, batched scoring and generation."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.backends.hf import generation, loglikelihood
from evalharness.backends.hf.loader import ModelConfig, load_model, weights_identity
from evalharness.backends.hf.memory import auto_rows
from evalharness.backends.hf.prefix import BatchSize
from evalharness.backends.prompt_fitting import Encoder
from evalharness.backends.protocol import Resume
from evalharness.backends.registry import register_backend
from evalharness.core.requests import (
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


SCORING_ROWS = 8  # the default scoring batch: larger ones gain little on a CPU and cost memory
DECODE_ROWS = 64  # the default decode batch's cap: each step reads every weight once, so more rows pay


class HFBackend:
    """``transformers`` causal LM on torch. ``batch_size`` counts sequences per forward pass.

    By default (``None``) scoring runs ``SCORING_ROWS`` per pass and generation decodes as many
    rows as memory allows, up to ``DECODE_ROWS``; a number (or ``"auto"``) sets both.
    """

    def __init__(
        self,
        config: ModelConfig,
        batch_size: int | str | None = None,
        max_length: int | None = None,
        reuse_prefixes: bool = True,
    ) -> None:
        self.config = config
        self.model, self.tokenizer, self.device = load_model(config)
        self.encoder = Encoder(self.tokenizer)
        # "auto" sizes each batch from free memory and the length of its longest row.
        rows_per_batch: BatchSize = auto_rows(self.model, self.device) if batch_size == "auto" else int(batch_size or SCORING_ROWS)
        decode_rows = auto_rows(self.model, self.device, DECODE_ROWS) if batch_size is None else rows_per_batch
        self.max_length = max_length or context_length(self.model, self.tokenizer)
        eos = config.model_args.get("eos_token_id", self.model.generation_config.eos_token_id)
        listed = eos if isinstance(eos, (list, tuple)) else (eos,)
        self.eos_token_ids = tuple(int(t) for t in listed if t is not None)
        self.pad_id = int(self.tokenizer.pad_token_id or (self.eos_token_ids or (0,))[0] or 0)
        self.decoder = generation.Decoder(
            self.model, self.encoder, lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True),
            self.device, self.pad_id, self.eos_token_ids, self.max_length, rows_per_batch, reuse_prefixes,
            decode_rows,
        )

    # Batch size and prefix reuse live in the decoder; scoring reads the same settings.
    @property
    def rows_per_batch(self) -> BatchSize:
        return self.decoder.rows_per_batch

    @rows_per_batch.setter
    def rows_per_batch(self, value: BatchSize) -> None:
        self.decoder.rows_per_batch = self.decoder.decode_rows = value

    @property
    def reuse_prefixes(self) -> bool:
        return self.decoder.reuse_prefixes

    @reuse_prefixes.setter
    def reuse_prefixes(self, value: bool) -> None:
        self.decoder.reuse_prefixes = value

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], resume: Resume[LoglikelihoodResponse] | None = None
    ) -> list[LoglikelihoodResponse]:
        if not requests:
            return []
        resume = resume or Resume()
        prepared = loglikelihood.prepare(self.encoder, requests, self.max_length)
        batches = loglikelihood.plan(
            prepared, self.rows_per_batch, self.reuse_prefixes, loglikelihood.packing_supported(self.model)
        )
        results = dict(resume.done)
        computed = loglikelihood.score(
            self.model, prepared, batches, self.device, self.pad_id,
            on_batch=resume.finished, skip=lambda indices: all(i in resume.done for i in indices),
        )
        results.update(computed)
        return [results[i] for i in range(len(requests))]

    def generate(
        self, requests: Sequence[GenerateRequest], resume: Resume[GenerateResponse] | None = None
    ) -> list[GenerateResponse]:
        if not requests:
            return []
        return generation.generate(self.decoder, requests, resume)

    def chat_tokenizer(self) -> Any:
        return self.tokenizer

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


HF_OPTIONS = frozenset({"device", "dtype", "batch_size", "max_length", "model_args", "trust_remote_code", "revision"})


@register_backend("hf", HF_OPTIONS, "Hugging Face transformers on torch, in this process")
def build_hf(model: str, options: Mapping[str, Any]) -> HFBackend:
    config = ModelConfig(
        model,
        dtype=str(options.get("dtype", "auto")),
        device=str(options.get("device", "auto")),
        revision=options.get("revision"),
        trust_remote_code=bool(options.get("trust_remote_code", False)),
        model_args=dict(options.get("model_args") or {}),
    )
    return HFBackend(config, batch_size=options.get("batch_size"), max_length=options.get("max_length"))
