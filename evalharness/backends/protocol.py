"""The backend protocol: three methods every model server implements.

Backends may compute requests in any order and batch them however they like; responses come
back in request order. ``resume`` (optional) carries responses already known — from the
response cache — and a callback for each batch as it completes: a backend skips the requests
already done and reports each finished batch, so a killed run loses at most one batch and the
cache stays backend-agnostic (``evalharness.backends.caching``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from evalharness.core.requests import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    Request,
)

R = TypeVar("R")


@dataclass(frozen=True)
class Resume(Generic[R]):
    """What is already known of a request list, and where to report each finished batch.

    ``done`` maps request index → response. A backend that plans batches over the whole list
    (the local one) skips a batch only when all its members are done, so a recomputed request
    lands in the same batch as in the first run and its numbers are identical.
    """

    done: Mapping[int, R] = field(default_factory=dict)
    record: Callable[[Sequence[int], Sequence[R]], None] | None = None

    def finished(self, indices: Sequence[int], responses: Sequence[R]) -> None:
        if self.record is not None and indices:
            self.record(indices, responses)


@runtime_checkable
class Backend(Protocol):
    """Responses come back in request order, whatever order the backend computed them in."""

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], resume: Resume[LoglikelihoodResponse] | None = None
    ) -> list[LoglikelihoodResponse]: ...

    def generate(
        self, requests: Sequence[GenerateRequest], resume: Resume[GenerateResponse] | None = None
    ) -> list[GenerateResponse]: ...

    def fingerprint(self) -> dict[str, Any]:
        """Everything that identifies the model's outputs: weights, dtype, settings."""
        ...


@runtime_checkable
class ChatFormatting(Protocol):
    """A backend that can wrap a prompt as a user turn of its model's chat template."""

    def chat_tokenizer(self) -> Any:
        """The tokenizer whose chat template wraps prompts (--apply-chat-template)."""
        ...


@runtime_checkable
class RequestLimits(Protocol):
    """A backend that cannot answer every request (an endpoint without log-probabilities)."""

    def refusal(self, task: str, request: Request) -> str | None:
        """Why ``task``'s ``request`` cannot be answered, in one line; None when it can.

        Asked of every planned request before any is sent."""
        ...
