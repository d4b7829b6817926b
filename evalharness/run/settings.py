"""A run's settings, split from the model's: what to evaluate, and how to decode.

``RunConfig`` holds run settings only; the backend's own settings (device, dtype, batch size,
server URL…) travel in ``ModelSpec.options`` and are checked by that backend.
``--gen-kwargs`` values are checked here, whether or not a selected task generates, and may
target one task (``humaneval:temperature=0.8``) or all of them (``temperature=0``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evalharness.core.errors import EvalHarnessError, UnknownNameError
from evalharness.core.registry import did_you_mean
from evalharness.core.requests import SamplingParams

SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams))
GEN_KWARGS = (*SAMPLING_FIELDS, "return_full_text")
FLAGS = ("do_sample", "ignore_eos", "return_full_text")
SECRET_OPTIONS = ("api_key",)  # backend options never written to results.json


def _check_value(key: str, value: Any) -> Any:
    """One --gen-kwargs value, in the type and range its setting takes."""
    where = f"--gen-kwargs {key}={value!r}"
    if key in FLAGS:
        if not isinstance(value, bool):
            raise EvalHarnessError(f"{where}: expected true or false")
        return value
    if key in ("max_new_tokens", "top_k", "seed"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise EvalHarnessError(f"{where}: expected an integer")
        low = {"max_new_tokens": 1, "top_k": 0, "seed": 0}[key]
        if value < low or (key == "seed" and value >= 2**63):
            raise EvalHarnessError(f"{where}: out of range (at least {low})")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EvalHarnessError(f"{where}: expected a finite number")
    if key == "temperature" and value < 0:
        raise EvalHarnessError(f"{where}: must be >= 0")
    if key == "top_p" and not 0 < value <= 1:
        raise EvalHarnessError(f"{where}: must be in (0, 1]")
    return float(value)


def parse_gen_kwargs(gen_kwargs: Mapping[str, Any]) -> dict[str | None, dict[str, Any]]:
    """{task or None (all tasks): {setting: value}}, every name and value checked."""
    scoped: dict[str | None, dict[str, Any]] = {}
    for raw_key, value in gen_kwargs.items():
        task, sep, key = raw_key.rpartition(":")
        if key not in GEN_KWARGS:
            raise UnknownNameError(f"--gen-kwargs: unknown setting {key!r}{did_you_mean(key, list(GEN_KWARGS))}")
        scoped.setdefault(task if sep else None, {})[key] = _check_value(key, value)
    return scoped


@dataclass(frozen=True)
class ModelSpec:
    """Which model, through which backend, with the backend's own settings."""

    model: str
    backend: str = "hf"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    tasks: tuple[str, ...]
    num_fewshot: int | None = None
    limit: int | None = None
    seed: int = 1234
    data_dir: str | None = None
    output_dir: str | None = None
    log_prompts: bool = True
    gen_kwargs: Mapping[str, Any] = field(default_factory=dict)
    task_args: Mapping[str, Any] = field(default_factory=dict)
    cache_path: str | None = None  # response cache (SQLite); None disables it
    prompt_dir: str | None = None  # user templates, searched before prompts/ (sandboxed)
    apply_chat_template: bool = False

    def __post_init__(self) -> None:
        if not self.tasks:
            raise EvalHarnessError("no tasks given (--tasks)")
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            raise EvalHarnessError(f"--limit {self.limit}: must be a positive integer")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise EvalHarnessError(f"--num-fewshot {self.num_fewshot}: must be >= 0")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise EvalHarnessError(f"--seed {self.seed}: must be an integer from 0 to {2**32 - 1}")
        parse_gen_kwargs(self.gen_kwargs)  # every value checked before anything loads

    def overrides_for(self, task: str) -> dict[str, Any]:
        """--gen-kwargs for one task: the settings for all tasks, then the task's own."""
        scoped = parse_gen_kwargs(self.gen_kwargs)
        return {**scoped.get(None, {}), **scoped.get(task, {})}

    def to_record(self, model: ModelSpec) -> dict[str, Any]:
        """The flat ``config`` of results.json: run settings, the model and its backend's."""
        record = {
            k: (dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self).items()
        }
        options = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in model.options.items() if k not in SECRET_OPTIONS}
        return {"model": model.model, "backend": model.backend, **record, **options}
