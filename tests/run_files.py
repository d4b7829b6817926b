"""Malformed results directories, written as files from a real run (tests/golden/mmlu-tiny-limit2)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent / "golden" / "mmlu-tiny-limit2"


def copy_golden(folder: Path) -> Path:
    shutil.copytree(GOLDEN, folder)
    return folder


def read_results(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "results.json").read_text("utf-8"))
    return data


def write_results(folder: Path, results: Any) -> Path:
    (folder / "results.json").write_text(json.dumps(results, indent=1), "utf-8")  # NaN is written as NaN
    return folder


def edit_results(folder: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    """Change results.json in place (``change`` mutates the dict; what it returns is ignored)."""
    results = read_results(folder)
    change(results)
    return write_results(folder, results)


def read_samples(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text("utf-8").splitlines()]


def write_samples(folder: Path, samples: list[Any]) -> Path:
    (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples), "utf-8")
    return folder


def edit_first_sample(folder: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    """Change the first line of samples.jsonl (``change`` mutates the record; what it returns is ignored)."""
    samples = read_samples(folder)
    change(samples[0])
    return write_samples(folder, samples)


def replace_first_sample(folder: Path, line: Any) -> Path:
    samples: list[Any] = read_samples(folder)
    samples[0] = line
    return write_samples(folder, samples)


def seal(folder: Path, digest: str | None = None) -> Path:
    """Record samples_sha256 in results.json: the real digest of samples.jsonl, or ``digest``."""
    real = hashlib.sha256((folder / "samples.jsonl").read_bytes()).hexdigest()
    return edit_results(folder, lambda r: r.update(samples_sha256=digest or real))


def degrade(folder: Path, flips: int | None = None) -> Path:
    """Turn the first ``flips`` (default: all) correct MMLU answers wrong; totals recomputed."""
    samples = read_samples(folder)
    left = sum(s["metrics"]["acc"] for s in samples) if flips is None else flips
    for sample in samples:
        if left and sample["metrics"]["acc"] == 1.0:
            sample["metrics"]["acc"], left = 0.0, left - 1
    write_samples(folder, samples)
    acc = sum(s["metrics"]["acc"] for s in samples) / len(samples)
    return edit_results(folder, lambda r: r["tasks"]["mmlu"]["metrics"]["acc"].update(value=acc))


def acc(results: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = results["tasks"]["mmlu"]["metrics"]["acc"]
    return entry
