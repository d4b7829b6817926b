"""One loader for a results directory, shared by ``evalharness gate`` and ``evalharness report``.

``load_run(path)`` reads ``results.json`` (and ``samples.jsonl`` when it is there), checks every
field the reporting layer reads, and returns a frozen ``LoadedRun``. Every problem is a one-line
``DataError`` naming the file and the line or field, so the command line can exit 2 with it.

What is checked:

- ``results.json`` exists, is UTF-8, is JSON, is an object with ``schema_version`` 1 and a
  ``tasks`` mapping; ``config`` (when present) is an object with a list of ``tasks``.
- every metric entry (``tasks.<t>.metrics.<m>``, ``tasks.<t>.groups.<g>.<m>``,
  ``tasks.<t>.subtasks.<s>.<m>``) is an object whose ``value`` is a finite number, or null for
  "not computed"; ``stderr`` is a finite number or null; ``higher_is_better`` is true or false.
- every line of ``samples.jsonl`` is a JSON object with ``task`` (text), ``doc_id`` (an integer
  or text) and ``prompt_hash`` (text); ``metrics``, when present, is an object.
- when ``results.json`` carries ``samples_sha256``, it is the sha256 of ``samples.jsonl``'s bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalharness.core.errors import DataError

RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
SCHEMA_VERSION = 1
LOWER_IS_BETTER_FALLBACK = "toxic"  # older files without higher_is_better: these names improve downwards
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class LoadedRun:
    """A results directory, read and checked: ``results.json`` as a dict, ``samples.jsonl`` as records."""

    path: Path  # the run directory
    results: dict[str, Any]
    samples: tuple[dict[str, Any], ...] | None  # None when the run has no samples.jsonl

    @property
    def results_file(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def samples_file(self) -> Path:
        return self.path / SAMPLES_FILE

    @property
    def config(self) -> dict[str, Any]:
        config = self.results.get("config")
        return config if isinstance(config, dict) else {}

    @property
    def model(self) -> str:
        """The model as given to ``evalharness run`` (a path or a hub id)."""
        fingerprint = self.results.get("model")
        fallback = fingerprint.get("model") if isinstance(fingerprint, dict) else None
        return str(self.config.get("model") or fallback or "?")

    @property
    def model_name(self) -> str:
        return Path(self.model.rstrip("/")).name or self.model

    @property
    def limit(self) -> int | None:
        limit = self.config.get("limit")
        return limit if isinstance(limit, int) else None

    @property
    def requested(self) -> list[str]:
        """The ``--tasks`` names of the run (tasks, subtasks or ``llama2_card``)."""
        return [str(t) for t in self.config.get("tasks") or []]

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        tasks: dict[str, dict[str, Any]] = self.results["tasks"]
        return tasks

    def task(self, name: str) -> dict[str, Any] | None:
        return self.tasks.get(name)


def metric_higher_is_better(entry: Mapping[str, Any] | None, metric: str) -> bool:
    """A metric's direction: ``higher_is_better`` from results.json, else the old naming rule."""
    flag = entry.get("higher_is_better") if entry is not None else None
    if isinstance(flag, bool):
        return flag
    return LOWER_IS_BETTER_FALLBACK not in metric


def load_run(path: str | Path) -> LoadedRun:
    """Read and check a run directory (or its ``results.json``); raise a one-line DataError if malformed."""
    given = Path(path)
    folder, results_file = (given, given / RESULTS_FILE) if given.is_dir() else (given.parent, given)
    if not results_file.is_file():
        raise DataError(f"{given}: no {RESULTS_FILE} (give a run directory written by `evalharness run`)")
    results = _read_results(results_file)
    samples_file = folder / SAMPLES_FILE
    samples = _read_samples(samples_file, results_file, results) if samples_file.is_file() else None
    return LoadedRun(folder, results, samples)


# --- results.json ------------------------------------------------------------------------------------


def _read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise DataError(f"{file}: cannot read ({exc.strerror or exc})") from None


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _read_results(file: Path) -> dict[str, Any]:
    data = _read_bytes(file)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}, line {_line_of(data, exc.start)}: not UTF-8 text") from None
    try:
        results = json.loads(text)  # NaN and Infinity parse; _check_metric names the field that holds one
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(results, dict):
        raise DataError(f"{file}: not an evalharness results file (a JSON {_kind(results)}, not an object)")
    if results.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{file}: schema_version {results.get('schema_version')!r} is not {SCHEMA_VERSION}"
                        " (not an evalharness results file, or from another version)")
    tasks = results.get("tasks")
    if not isinstance(tasks, dict):
        raise DataError(f"{file}: field tasks is missing or not an object (a mapping of task name to results)")
    for name, entry in tasks.items():
        _check_task(file, name, entry)
    _check_config(file, results.get("config"))
    for key in ("model", "harness"):
        if key in results and not isinstance(results[key], dict):
            raise DataError(f"{file}: field {key} is a {_kind(results[key])}, not an object")
    return results


def _check_config(file: Path, config: Any) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise DataError(f"{file}: field config is a {_kind(config)}, not an object")
    tasks = config.get("tasks")
    if tasks is not None and not (isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)):
        raise DataError(f"{file}: field config.tasks is not a list of task names")
    limit = config.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise DataError(f"{file}: field config.limit is {limit!r}, not an integer or null")


def _check_task(file: Path, name: str, entry: Any) -> None:
    where = f"tasks.{name}"
    if not isinstance(entry, dict):
        raise DataError(f"{file}: field {where} is a {_kind(entry)}, not an object")
    metrics = entry.get("metrics", {})
    if not isinstance(metrics, dict):
        raise DataError(f"{file}: field {where}.metrics is a {_kind(metrics)}, not an object")
    for metric, value in metrics.items():
        _check_metric(file, f"{where}.metrics.{metric}", value)
    for section in ("groups", "subtasks"):
        parts = entry.get(section, {})
        if not isinstance(parts, dict):
            raise DataError(f"{file}: field {where}.{section} is a {_kind(parts)}, not an object")
        for part, part_metrics in parts.items():
            if not isinstance(part_metrics, dict):
                raise DataError(f"{file}: field {where}.{section}.{part} is a {_kind(part_metrics)}, not an object")
            for metric, value in part_metrics.items():
                _check_metric(file, f"{where}.{section}.{part}.{metric}", value)
    shots = entry.get("num_fewshot")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int)):
        raise DataError(f"{file}: field {where}.num_fewshot is {shots!r}, not an integer")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_metric(file: Path, where: str, entry: Any) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"{file}: field {where} is a {_kind(entry)}, not an object with a value")
    if "value" not in entry:
        raise DataError(f"{file}: field {where} has no value (null if it was not computed)")
    for key in ("value", "stderr"):
        value = entry.get(key)
        if value is None:
            continue
        if not _is_number(value):
            raise DataError(f"{file}: field {where}.{key} is {value!r}, not a number (null if not computed)")
        if math.isnan(value):
            raise DataError(f"{file}: field {where}.{key} is NaN, not a number (null if not computed)")
        if not math.isfinite(value):
            raise DataError(f"{file}: field {where}.{key} is {'-' if value < 0 else ''}Infinity, not a finite number")
    n = entry.get("n")
    if n is not None and not _is_number(n):
        raise DataError(f"{file}: field {where}.n is {n!r}, not a number")
    if "higher_is_better" in entry and not isinstance(entry["higher_is_better"], bool):
        raise DataError(f"{file}: field {where}.higher_is_better is {entry['higher_is_better']!r}, not true or false")


# --- samples.jsonl -----------------------------------------------------------------------------------


def _read_samples(file: Path, results_file: Path, results: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    data = _read_bytes(file)
    expected = results.get("samples_sha256")
    if expected is not None:
        if not isinstance(expected, str) or not _SHA256.fullmatch(expected.lower()):
            raise DataError(f"{results_file}: field samples_sha256 is {expected!r}, not a hex sha256")
        if hashlib.sha256(data).hexdigest() != expected.lower():
            raise DataError(f"{file}: sha256 differs from samples_sha256 in {results_file}:"
                            " results.json and samples.jsonl come from different runs")
    samples = []
    lines = data.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()  # the newline that ends the last record
    for number, raw in enumerate(lines, start=1):
        samples.append(_parse_sample(file, number, raw))
    return tuple(samples)


def _parse_sample(file: Path, number: int, raw: bytes) -> dict[str, Any]:
    where = f"{file}, line {number}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text") from None
    if not text.strip():
        raise DataError(f"{where}: blank line (one JSON object per line)")
    try:
        sample = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(sample, dict):
        raise DataError(f"{where}: a JSON {_kind(sample)}, not a sample object")
    for key in ("task", "prompt_hash"):
        if not isinstance(sample.get(key), str) or not sample[key]:
            what = "missing" if key not in sample else f"{sample[key]!r}, not text"
            raise DataError(f"{where}: field {key} is {what}")
    doc_id = sample.get("doc_id")
    if isinstance(doc_id, bool) or not isinstance(doc_id, (int, str)):
        what = "missing" if "doc_id" not in sample else f"{doc_id!r}, not an integer or text"
        raise DataError(f"{where}: field doc_id is {what}")
    if "subtask" in sample and not isinstance(sample["subtask"], str):
        raise DataError(f"{where}: field subtask is {sample['subtask']!r}, not text")
    if "metrics" in sample and not isinstance(sample["metrics"], dict):
        raise DataError(f"{where}: field metrics is a {_kind(sample['metrics'])}, not an object")
    return sample


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )
