"""Run each harness in its own subprocess, measure it, and read its per-document outputs
(``records``: one shape for both, so they can be compared document by document)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import records
from records import DocRecord, Key
from specs import Part

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workload:
    """One row of the table: tasks on a model, with their size and batch sizes.

    A task row has one part; the whole-card row has several, run in one process per harness.
    ``our_tasks`` replaces the parts on our side only (then lm-eval does not run): the full
    ``llama2_card`` line.
    """

    name: str  # the row's task column
    model: Path
    limit: int  # documents per subtask
    parts: tuple[Part, ...]
    ours_batch_size: int | str = 8  # "default": no --batch-size (scoring 8, decoding from memory)
    lm_eval_batch_size: int = 8
    our_tasks: tuple[str, ...] = ()
    task_args: str = ""  # our --task-args

    @property
    def ours_only(self) -> bool:
        return bool(self.our_tasks)

    @property
    def our_task_list(self) -> list[str]:
        return list(self.our_tasks) or [t for p in self.parts for t in p.our_tasks]

    @property
    def lm_eval_tasks(self) -> list[str]:
        return [t for p in self.parts for t in p.lm_eval_tasks]


def our_task_names() -> set[str]:
    """The tasks this harness has (``evalharness tasks``: one task name at the start of each line)."""
    listing = subprocess.run([sys.executable, "-m", "evalharness", "tasks"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


@dataclass
class Measured:
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    returncode: int
    log_file: Path
    others_cpu_s: float  # CPU time the rest of the machine used meanwhile: a disturbance indicator


def machine_busy_s() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores, /proc/stat)."""
    with open("/proc/stat", encoding="utf-8") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class HarnessRun:
    measured: Measured
    docs: dict[Key, DocRecord]  # empty for the full-card line (nothing to compare it with)
    documents: int
    eval_time_s: float | None  # the evaluation time the harness reports itself


def run_measured(cmd: Sequence[str], log_file: Path, env: dict[str, str] | None = None) -> Measured:
    """Run ``cmd`` to completion; wall time, CPU time and peak RSS of that process alone.

    ``os.wait4`` returns the resource usage of exactly this child (RUSAGE_CHILDREN would give the
    maximum over every child this process has waited for).
    """
    log.info("running %s", " ".join(cmd))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started, busy = time.perf_counter(), machine_busy_s()
    with log_file.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall, busy = time.perf_counter() - started, machine_busy_s() - busy
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    measured = Measured(
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        returncode=proc.returncode,
        log_file=log_file,
        others_cpu_s=max(0.0, busy - cpu),
    )
    if measured.returncode != 0:
        tail = log_file.read_text("utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{cmd[2:4]} exited {measured.returncode}; log {log_file}:\n{tail}")
    log.info("done in %.1f s, peak RSS %.0f MiB", wall, measured.peak_rss_mib)
    if measured.others_cpu_s > 0.1 * wall:
        log.warning("other processes used %.0f CPU s meanwhile: this timing is disturbed", measured.others_cpu_s)
    return measured


# ---------------------------------------------------------------------------------------------
# this harness


def run_ours(w: Workload, data_dir: Path, out: Path, log_file: Path, available: set[str]) -> HarnessRun | None:
    """This harness on the workload, or None where it has no such task yet."""
    missing = [p.spec.name for p in w.parts if p.spec.name not in available]
    if missing and not w.ours_only:
        log.info("evalharness has no %s task: that row runs lm-eval only", ", ".join(missing))
        return None
    cmd = [
        sys.executable, "-m", "evalharness", "run",
        "--model", str(w.model), "--tasks", ",".join(w.our_task_list), "--limit", str(w.limit),
        "--data-dir", str(data_dir), "--output", str(out),
        "--device", "cpu", "--dtype", "float32",
        "--no-cache",  # its response cache would answer repeated runs without computing anything
    ]  # fmt: skip
    if w.ours_batch_size != "default":
        cmd += ["--batch-size", str(w.ours_batch_size)]
    if w.task_args:
        cmd += ["--task-args", w.task_args]
    measured = run_measured(cmd, log_file)
    results = json.loads((out / "results.json").read_text("utf-8"))
    samples = out / "samples.jsonl"
    documents = sum(1 for line in samples.read_text("utf-8").splitlines() if line.strip())
    docs = {} if w.ours_only else records.read_ours(samples, w.parts, w.limit, data_dir)
    return HarnessRun(measured, docs, documents, results.get("wall_time_s"))


# ---------------------------------------------------------------------------------------------
# lm-evaluation-harness


def run_lm_eval(w: Workload, include_path: Path, out: Path, log_file: Path) -> HarnessRun:
    model_args = f"pretrained={w.model},dtype=float32"
    cmd = [
        sys.executable, "-m", "lm_eval", "run",
        "--model", "hf", "--model_args", model_args, "--device", "cpu",
        "--tasks", ",".join(w.lm_eval_tasks), "--limit", str(w.limit),
        "--batch_size", str(w.lm_eval_batch_size), "--include_path", str(include_path),
        "--log_samples", "--output_path", str(out),
    ]  # fmt: skip
    measured = run_measured(cmd, log_file)
    results_files = sorted(out.rglob("results_*.json"))
    if not results_files:
        raise RuntimeError(f"lm-eval wrote no results file under {out}")
    results = json.loads(results_files[-1].read_text("utf-8"))
    eval_time = results.get("total_evaluation_time_seconds")
    docs = records.read_lm_eval(out, w.parts)
    return HarnessRun(measured, docs, len(docs), float(eval_time) if eval_time is not None else None)
