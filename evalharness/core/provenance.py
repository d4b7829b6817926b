"""What produced a result: harness version, git commit, library versions, host."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

from evalharness._version import __version__

LIBRARIES = ("torch", "transformers", "tokenizers", "datasets", "jinja2", "numpy", "rouge-score", "evaluate")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def harness_version() -> dict[str, str | None]:
    checkout = Path(__file__).resolve().parents[2]
    sha = None
    if (checkout / ".git").exists():
        try:
            sha = subprocess.run(
                ["git", "-C", str(checkout), "rev-parse", "HEAD"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip() or None
            dirty = subprocess.run(
                ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
            if sha and dirty:
                sha += "-dirty"
        except (OSError, subprocess.SubprocessError):
            sha = None
    return {"version": __version__, "git_sha": sha}


def host() -> dict[str, str | int | None]:
    import os

    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "argv0": sys.argv[0]}
