"""evalharness: reproduce the Llama 2 model card's benchmark tables."""

from __future__ import annotations

__version__ = "0.1.0"
