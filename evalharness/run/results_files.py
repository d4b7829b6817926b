"""The results directory: ``results.json`` (schema below) and ``samples.jsonl``, written atomically.

Schema version 1, documented in the README ("Results files"). Metric values are fractions
(0.453, not 45.3); the tables print them as percentages.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from evalharness.core.averages import MetricValue

SCHEMA_VERSION = 1


def metrics_to_dict(metrics: Mapping[str, MetricValue]) -> dict[str, dict[str, Any]]:
    return {name: _clean(m.to_dict()) for name, m in metrics.items()}


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def atomic_write(path: Path, lines: Iterable[str]) -> None:
    """Write to a temporary file beside ``path`` and rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make results unreadable to others
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_run(output_dir: Path, results: Mapping[str, Any], samples: Iterable[Mapping[str, Any]]) -> None:
    atomic_write(
        output_dir / "samples.jsonl",
        (json.dumps(_clean(dict(s)), ensure_ascii=False) + "\n" for s in samples),
    )
    atomic_write(output_dir / "results.json", [json.dumps(_clean(dict(results)), indent=2) + "\n"])


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
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
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
