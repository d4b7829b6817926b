"""``evalharness tasks``: what can run, how the card measures it, and whether its data is here.

    evalharness tasks                   every task and group, one line each
    evalharness tasks mmlu              one task: its subtasks, data files, card benchmarks
    evalharness tasks --json            the same, for scripts
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from evalharness.core.errors import UnknownNameError
from evalharness.core.registry import did_you_mean
from evalharness.core.task import Task
from evalharness.data.source import DATA_DIR_ENV, DataSource


@dataclass(frozen=True)
class TaskInfo:
    name: str
    version: str
    shape: str  # the shared shape it is declared on
    shots: int
    metrics: list[str]  # what it reports ([] when known only after a run)
    card: list[str]  # "HellaSwag (Table 20): acc_norm, 0-shot"
    subtasks: list[str]
    data: str  # "local", "missing: <path>", "hub: <id>", "local only"


SHAPES = ("MultipleChoice", "PartialScoring", "ShortAnswer", "ScoredGeneration", "ReferenceOverlap")


def shape_of(task: Task) -> str:
    for cls in type(task).__mro__:
        if cls.__name__ in SHAPES:
            return cls.__name__
    return type(task).__mro__[1].__name__


def declared_metrics(task: Task) -> list[str]:
    metrics = getattr(task, "metrics", None)
    if isinstance(metrics, tuple):
        return list(metrics)
    rouge = getattr(task, "rouge_types", None)
    if isinstance(rouge, tuple):
        return [*rouge, *(f"bleu_{n}" for n in getattr(task, "bleu_orders", ()))]
    comparisons = getattr(task, "comparisons", None)
    extractors = getattr(task, "extractors", None)
    if isinstance(comparisons, dict) and isinstance(extractors, dict):
        return [f"{m}_{e}" if e else m for m in comparisons for e in extractors]
    return []


def data_status(task: Task, data: DataSource) -> str:
    """Whether the task's documents can be read from here, without reading them."""
    dataset = task.dataset
    if dataset is None:
        return "custom"
    subset = task.subset(task.subtasks()[0])
    if not data.is_local:
        return f"hub: {dataset.hub_id}" if dataset.hub_id else "local only: pass --data-dir"
    if dataset.local is None:
        return f"no local copy; loads from the hub ({dataset.hub_id})"
    where = dataset.where(data, dataset.split, subset)
    return "local" if os.path.isfile(where) else f"missing: {where}"


def describe(task: Task, data: DataSource) -> TaskInfo:
    from evalharness.reporting.card import load_card

    card = [
        f"{b.label} ({b.source}): {b.metric}, {b.shots_text()}"
        for b in load_card().benchmarks.values()
        if b.task == task.name
    ]
    subtasks = task.subtasks()
    return TaskInfo(
        task.name, task.version, shape_of(task), task.default_fewshot, declared_metrics(task), card,
        subtasks if len(subtasks) > 1 else [], data_status(task, data),
    )


def groups() -> dict[str, list[str]]:
    """The names ``--tasks`` accepts as groups, with their member tasks (from the card data)."""
    from evalharness.core.task_selection import group_names, group_tasks

    return {name: group_tasks(name) for name in group_names()}


def run(args: argparse.Namespace) -> int:
    from evalharness.core.task_selection import all_tasks

    data = DataSource(args.data_dir) if args.data_dir or os.environ.get(DATA_DIR_ENV) else DataSource(None)
    tasks = {t.name: t for t in all_tasks()}
    if args.name:
        return _one(args.name, tasks, data, args.json)
    infos = [describe(t, data) for t in tasks.values()]
    known = set(tasks)
    group_table = {g: [(m, m in known) for m in members] for g, members in groups().items()}
    if args.json:
        print(json.dumps({"tasks": [asdict(i) for i in infos],
                          "groups": {g: [m for m, _ in ms] for g, ms in group_table.items()}}, indent=2))
        return 0
    rows = [("task", "shape", "shots", "metrics", "subtasks", "data")]
    for info in infos:
        rows.append((info.name, info.shape, str(info.shots), ", ".join(info.metrics) or "-",
                     str(len(info.subtasks) or "-"), info.data))
    print(_table(rows))
    print("\ngroups (--tasks NAME; * = not in this installation yet):")
    for group, members in group_table.items():
        print(f"  {group:22} " + ", ".join(m if ok else f"{m}*" for m, ok in members))
    print("\n`evalharness tasks NAME` shows a task's subtasks and the card numbers it reproduces.")
    return 0


def _one(name: str, tasks: dict[str, Task], data: DataSource, as_json: bool) -> int:
    if name not in tasks:
        owner = next((t for t in tasks.values() if name in t.subtasks()), None)
        if owner is None:
            known = sorted({*tasks, *(s for t in tasks.values() for s in t.subtasks())})
            raise UnknownNameError(f"unknown task {name!r}{did_you_mean(name, known)}")
        name = owner.name
    info = describe(tasks[name], data)
    if as_json:
        print(json.dumps(asdict(info), indent=2))
        return 0
    lines = [f"{info.name} v{info.version}: {info.shape}, {info.shots}-shot",
             f"  metrics:  {', '.join(info.metrics) or 'see results.json'}",
             f"  data:     {info.data}"]
    lines += [f"  card:     {c}" for c in info.card] or ["  card:     (not a card benchmark)"]
    if info.subtasks:
        lines.append(f"  subtasks ({len(info.subtasks)}; each runs alone with --tasks NAME):")
        lines += [f"    {s}" for s in info.subtasks]
    print("\n".join(lines))
    return 0


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("tasks", help="list tasks, groups and subtasks (evalharness tasks NAME)")
    parser.add_argument("name", nargs="?", help="a task (or subtask) to describe")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--data-dir", help=f"check data availability here (default ${DATA_DIR_ENV}, else the hub)")
