"""The results directory: ``results.json`` (schema below) and ``samples.jsonl``, written atomically.

Schema version 1, documented in the README ("Results files"). Metric values are fractions
(0.453, not 45.3); the tables print them as percentages.

The two files are one unit: samples.jsonl is renamed into place first, then results.json, which
records the sha256 of the samples it belongs to (``samples_sha256``). results.json is the
commit point: a kill between the two renames leaves new samples beside old results, and
``verify_samples`` tells them apart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from evalharness.core.averages import MetricValue
from evalharness.core.errors import DataError, EvalHarnessError
from evalharness.data.source import sha256_file

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RUN_FILES = ("samples.jsonl", "results.json")
SAMPLES_HASH_FIELD = "samples_sha256"


def metrics_to_dict(metrics: Mapping[str, MetricValue]) -> dict[str, dict[str, Any]]:
    return {name: _clean(m.to_dict()) for name, m in metrics.items()}


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def atomic_write(path: Path, lines: Iterable[str]) -> str:
    """Write to a temporary file beside ``path`` and rename: a crash never leaves half a file.

    Returns the hex sha256 of the bytes written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make results unreadable to others
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as fh:
            for line in lines:
                data = line.encode("utf-8")
                digest.update(data)
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def remove_stale_temp_files(output_dir: Path) -> None:
    """Temporary files a killed writer left behind (only ours: ``.<run file>.*.tmp``)."""
    for name in RUN_FILES:
        for stale in output_dir.glob(f".{name}.*.tmp"):
            try:
                stale.unlink()
                log.debug("removed a leftover temporary file %s", stale)
            except OSError as exc:  # not worth failing a finished run over
                log.warning("could not remove leftover temporary file %s: %s", stale, exc)


def write_run(output_dir: Path, results: Mapping[str, Any], samples: Iterable[Mapping[str, Any]]) -> None:
    """samples.jsonl first, then results.json (the commit point) carrying the samples' sha256."""
    if output_dir.is_dir():
        remove_stale_temp_files(output_dir)
    samples_sha256 = atomic_write(
        output_dir / "samples.jsonl",
        (json.dumps(_clean(dict(s)), ensure_ascii=False) + "\n" for s in samples),
    )
    committed = {**_clean(dict(results)), SAMPLES_HASH_FIELD: samples_sha256}
    atomic_write(output_dir / "results.json", [json.dumps(committed, indent=2) + "\n"])


def verify_samples(run_dir: str | os.PathLike[str]) -> bool:
    """Check that samples.jsonl is the one results.json was written with.

    Returns True when verified, False for results written before ``samples_sha256`` existed;
    raises a one-line DataError when the pair is inconsistent or unreadable.
    """
    folder = Path(run_dir)
    results_path, samples_path = folder / "results.json", folder / "samples.jsonl"
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{results_path}: unreadable results file ({type(exc).__name__})") from None
    expected = results.get(SAMPLES_HASH_FIELD) if isinstance(results, dict) else None
    if expected is None:
        return False
    try:
        actual = sha256_file(samples_path)
    except OSError as exc:
        raise DataError(f"{samples_path}: missing or unreadable ({exc.strerror or type(exc).__name__})") from None
    if actual != expected:
        raise DataError(
            f"{samples_path} does not belong to {results_path} (sha256 {actual[:12]}…, results.json "
            f"expects {str(expected)[:12]}…): the run that wrote them was interrupted; rerun it"
        )
    return True


def check_output_dir(path: str | os.PathLike[str] | None) -> None:
    """Fail before any work when --output can never be written: an existing file, a folder
    without write permission, or a parent path that is a file."""
    if path is None:
        return
    text = os.fspath(path)
    if not text.strip():
        raise EvalHarnessError("--output '': give a directory")
    target = Path(text).expanduser()
    if target.exists() and not target.is_dir():
        raise EvalHarnessError(f"--output {text!r} is an existing file, not a directory")
    probe = target
    while not probe.exists():  # the nearest existing ancestor must let us create the rest
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise EvalHarnessError(f"--output {text!r}: {str(probe)!r} is a file, so the directory cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise EvalHarnessError(f"--output {text!r}: no permission to write in {str(probe)!r}")


def format_table(results: Mapping[str, Any]) -> str:
    """A plain-text summary: one row per task metric and per reported group."""
    rows = [("task", "metric", "value %", "± stderr", "n")]
    for task_name, task in results["tasks"].items():
        for metric, m in task["metrics"].items():
            rows.append((task_name, metric, _pct(m["value"]), _pct(m["stderr"]), str(m["n"])))
        for group, metrics in task.get("groups", {}).items():
            for metric, m in metrics.items():
                rows.append((f"  {group}", metric, _pct(m["value"]), _pct(m["stderr"]), str(m["n"])))
        note = _scoring_note(task)
        if note:
            rows.append((f"  ({note})", "", "", "", ""))
        if task.get("truncated_documents"):
            rows.append((f"  (truncated prompts: {task['truncated_documents']})", "", "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=False))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _scoring_note(task: Mapping[str, Any]) -> str:
    """Which judge or classifier scored the task, and whether that approximates the card."""
    parts = [f"{key}: {task[key]}" for key in ("judge", "classifier") if isinstance(task.get(key), str)]
    if task.get("approximate"):
        parts.append("approximate")
    return ", ".join(parts)


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"
