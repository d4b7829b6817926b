"""Hugging Face transformers backend on torch."""

from evalharness.hf.backend import HFBackend

__all__ = ["HFBackend"]
