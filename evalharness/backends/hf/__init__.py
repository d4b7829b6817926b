"""Hugging Face transformers backend on torch."""

from evalharness.backends.hf.backend import HFBackend

__all__ = ["HFBackend"]
