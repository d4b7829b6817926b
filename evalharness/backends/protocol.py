"""The backend protocol: three methods every model server implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from evalharness.core.requests import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
)


@runtime_checkable
class Backend(Protocol):
    """Responses come back in request order, whatever order the backend computed them in."""

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest]
    ) -> list[LoglikelihoodResponse]: ...

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResponse]: ...

    def fingerprint(self) -> dict[str, Any]:
        """Everything that identifies the model's outputs: weights, dtype, settings."""
        ...
