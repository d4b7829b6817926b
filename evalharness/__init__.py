"""evalharness: reproduce the Llama 2 model card's benchmark tables."""

from __future__ import annotations

from evalharness._version import __version__
from evalharness.run.runner import EvalResults, evaluate  # noqa: E402
from evalharness.run.settings import ModelSpec, RunConfig  # noqa: E402

__all__ = ["EvalResults", "ModelSpec", "RunConfig", "evaluate", "__version__"]
