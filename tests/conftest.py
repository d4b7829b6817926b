"""Shared fixtures: the real tiny models and real data in ../shared (never copied here)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The shared models and data: ``$EVALHARNESS_SHARED``, else ``../shared`` beside the repository.

    Resolved (symbolic links followed), as the harness records paths, so every test can compare
    its paths with the ones in results. Every test finds the folder through this function.
    """
    return Path(os.environ.get("EVALHARNESS_SHARED") or REPO.parent / "shared").expanduser().resolve()


SHARED = shared_dir()
DATA = SHARED / "data"
MODELS = SHARED / "models"
TINY_LLAMA = MODELS / "tiny-random-llama2"
STORIES = MODELS / "tinyllamas-stories260K"
LLAMA_TOKENIZER = MODELS / "llama2-tokenizer"

os.environ.setdefault("EVALHARNESS_NO_PROGRESS", "1")
# Each test session gets its own response cache, so no test reads another session's answers.
os.environ["EVALHARNESS_CACHE"] = os.path.join(tempfile.mkdtemp(prefix="evalharness-test-"), "cache.sqlite")


@pytest.fixture(scope="session")
def tiny_backend():
    from evalharness.backends.hf import HFBackend
    from evalharness.backends.hf.loader import ModelConfig

    return HFBackend(ModelConfig(str(TINY_LLAMA), dtype="float32", device="cpu"), batch_size=4)


@pytest.fixture(scope="session")
def stories_backend():
    from evalharness.backends.hf import HFBackend
    from evalharness.backends.hf.loader import ModelConfig

    return HFBackend(
        ModelConfig(str(STORIES), dtype="float32", device="cpu", model_args={"eos_token_id": 1}),
        batch_size=4,
    )


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "evalharness", *args],
        capture_output=True, text=True, cwd=cwd or REPO, env=full_env, timeout=900,
    )
