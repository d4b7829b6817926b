"""The response cache around any backend: one wrapper, as lm-eval's CachingLM.

Every response is stored as soon as its batch completes, keyed by the backend's own
fingerprint and the full request; a rerun asks the backend only for what is missing, passing
what is known through ``Resume`` so the backend can keep its batches as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from evalharness.backends.protocol import Backend, Resume
from evalharness.backends.response_cache import ResponseCache
from evalharness.core.requests import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    Request,
    Response,
)

T = TypeVar("T", bound=Response)


class CachingBackend:
    def __init__(self, inner: Backend, cache: ResponseCache) -> None:
        self.inner = inner
        self.cache = cache

    def _resume(self, requests: Sequence[Request], kind: type[T]) -> tuple[Resume[T], int]:
        keys = self.cache.keys(requests)
        found = self.cache.get_many(keys)
        done = {i: found[k] for i, k in enumerate(keys) if isinstance(found.get(k), kind)}

        def record(indices: Sequence[int], responses: Sequence[T]) -> None:
            self.cache.put_many((keys[i], r) for i, r in zip(indices, responses, strict=False))

        return Resume(done, record), len(done)  # type: ignore[arg-type]

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], resume: Resume[LoglikelihoodResponse] | None = None
    ) -> list[LoglikelihoodResponse]:
        if not requests:
            return []
        known, hits = self._resume(requests, LoglikelihoodResponse)
        if hits == len(requests):
            return [known.done[i] for i in range(len(requests))]
        return self.inner.loglikelihood(requests, known)

    def generate(
        self, requests: Sequence[GenerateRequest], resume: Resume[GenerateResponse] | None = None
    ) -> list[GenerateResponse]:
        if not requests:
            return []
        known, hits = self._resume(requests, GenerateResponse)
        if hits == len(requests):
            return [known.done[i] for i in range(len(requests))]
        return self.inner.generate(requests, known)

    def fingerprint(self) -> dict[str, Any]:
        return self.inner.fingerprint()

    def chat_tokenizer(self) -> Any:
        from evalharness.backends.protocol import ChatFormatting

        if not isinstance(self.inner, ChatFormatting):
            return None
        return self.inner.chat_tokenizer()

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.cache.path), "hits": self.cache.hits, "stored": self.cache.stored}

    def close(self) -> None:
        self.cache.close()
