"""Run each harness in its own subprocess, measure it, and read its per-document outputs.

Both harnesses' outputs are read into one shape, ``DocRecord``, keyed by ``(subtask, doc_id)``
where ``subtask`` is the MMLU subject (``anatomy``) or the task name, and ``doc_id`` the index in
the source split, so they can be compared document by document.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lmeval_setup import task_name

log = logging.getLogger(__name__)

LETTERS = ("A", "B", "C", "D")
Key = tuple[str, int]


@dataclass(frozen=True)
class Workload:
    """One row of the table: a task on a model, with its size and batch sizes."""

    task: str  # mmlu, gsm8k or truthfulqa_mc2
    model: Path
    limit: int  # documents per subtask
    subjects: tuple[str, ...] = ()  # MMLU only
    ours_batch_size: int = 8
    lm_eval_batch_size: int = 8

    @property
    def lm_eval_tasks(self) -> list[str]:
        if self.task == "mmlu":
            return [task_name("mmlu", s) for s in self.subjects]
        return [task_name(self.task)]

    @property
    def our_tasks(self) -> list[str]:
        if self.task == "mmlu":
            return [f"mmlu_{s}" for s in self.subjects]
        return [self.task]


def our_task_names() -> set[str]:
    """The tasks this harness has (``evalharness tasks``: one task name at the start of each line)."""
    listing = subprocess.run(
        [sys.executable, "-m", "evalharness", "tasks"], capture_output=True, text=True, check=True
    ).stdout
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
class DocRecord:
    prompt: str
    continuations: list[str] = field(default_factory=list)  # log-likelihood tasks
    logprobs: list[float] = field(default_factory=list)
    generation: str | None = None  # generation tasks
    prediction: str | None = None
    score: float = 0.0


@dataclass
class HarnessRun:
    measured: Measured
    docs: dict[Key, DocRecord]
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
    tasks = w.our_tasks
    if w.task not in available:
        log.info("evalharness has no %s task: that row runs lm-eval only", w.task)
        return None
    cmd = [
        sys.executable, "-m", "evalharness", "run",
        "--model", str(w.model), "--tasks", ",".join(tasks), "--limit", str(w.limit),
        "--data-dir", str(data_dir), "--output", str(out),
        "--device", "cpu", "--dtype", "float32", "--batch-size", str(w.ours_batch_size),
        "--no-cache",  # its response cache would answer repeated runs without computing anything
    ]  # fmt: skip
    measured = run_measured(cmd, log_file)
    results = json.loads((out / "results.json").read_text("utf-8"))
    choices: list[list[str]] = []
    if w.task == "truthfulqa_mc2":  # its samples log the scores, not the answers scored
        rows = json.loads((data_dir / "truthfulqa" / "mc_task.json").read_text("utf-8"))
        choices = [list(row["mc2_targets"]) for row in rows]
    docs = {}
    for line in (out / "samples.jsonl").read_text("utf-8").splitlines():
        s = json.loads(line)
        subtask = s["subtask"].removeprefix("mmlu_") if w.task == "mmlu" else w.task
        doc_id = int(s["doc_id"])
        docs[(subtask, doc_id)] = _our_record(w.task, s, choices[doc_id] if choices else [])
    return HarnessRun(measured, docs, results.get("wall_time_s"))


def _our_record(task: str, s: dict, choices: list[str]) -> DocRecord:
    if task == "mmlu":
        return DocRecord(
            prompt=s["prompt"],
            continuations=[" " + letter for letter in LETTERS],
            logprobs=[float(s["output"][letter]) for letter in LETTERS],
            prediction=s["prediction"],
            score=float(s["metrics"]["acc"]),
        )
    if task == "truthfulqa_mc2":
        logprobs = [float(x) for x in s["output"]]
        return DocRecord(
            prompt=s["prompt"],
            continuations=[" " + c for c in choices],
            logprobs=logprobs,
            prediction=str(max(range(len(logprobs)), key=logprobs.__getitem__)),
            score=float(s["metrics"]["mc2"]),
        )
    return DocRecord(  # gsm8k
        prompt=s["prompt"],
        generation=s["output"],
        prediction=normalise_answer(s["prediction"]["strict"]),
        score=float(s["metrics"]["exact_match_strict"]),
    )


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
    docs: dict[Key, DocRecord] = {}
    for name in w.lm_eval_tasks:
        files = sorted(out.rglob(f"samples_{name}_*.jsonl"))
        if not files:
            raise RuntimeError(f"lm-eval wrote no samples for {name} under {out}")
        subtask = name.removeprefix("bench_mmlu_") if w.task == "mmlu" else w.task
        for line in files[-1].read_text("utf-8").splitlines():
            s = json.loads(line)
            key = (subtask, int(s["doc_id"]))
            if w.task == "gsm8k":
                _merge_gsm8k(docs, key, s)
            else:
                docs[key] = _lm_eval_choice_record(w.task, s)
    return HarnessRun(measured, docs, float(eval_time) if eval_time is not None else None)


def _arguments(s: dict) -> list[list[str]]:
    """Each request's positional arguments (the log stores them as {gen_args_i: {arg_j: ...}})."""
    args = s["arguments"]
    if isinstance(args, dict):
        return [[a[f"arg_{j}"] for j in range(len(a))] for a in (args[f"gen_args_{i}"] for i in range(len(args)))]
    return args


def _lm_eval_choice_record(task: str, s: dict) -> DocRecord:
    args = _arguments(s)
    logprobs = [float(r[0][0]) for r in s["resps"]]
    best = max(range(len(logprobs)), key=logprobs.__getitem__)
    return DocRecord(
        prompt=args[0][0],
        continuations=[a[1] for a in args],
        logprobs=logprobs,
        prediction=LETTERS[best] if task == "mmlu" else str(best),
        score=float(s["acc"]),
    )


def _merge_gsm8k(docs: dict[Key, DocRecord], key: Key, s: dict) -> None:
    """gsm8k samples come once per filter; the strict-match line gives prediction and score."""
    record = docs.get(key)
    if record is None:
        record = docs[key] = DocRecord(prompt=_arguments(s)[0][0], generation=s["resps"][0][0])
    if s["filter"] == "strict-match":
        record.prediction = normalise_answer(s["filtered_resps"][0])
        record.score = float(s["exact_match"])


def normalise_answer(answer: str | None) -> str | None:
    """An extracted GSM8K answer without commas, dollar signs or a trailing full stop."""
    if answer is None or answer == "[invalid]":
        return None
    return re.sub(r"[,$]", "", answer).rstrip(".") or None
