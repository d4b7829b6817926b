"""Turn task names from the command line into (task, subtasks) to run."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass

from evalharness.errors import UnknownNameError
from evalharness.registry import did_you_mean
from evalharness.task import TASKS, Task

_loaded = False


def load_plugins() -> None:
    """Import every module under evalharness.tasks (the repo's tasks/), registering its tasks."""
    global _loaded
    if _loaded:
        return
    import evalharness.tasks as package

    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        importlib.import_module(f"{package.__name__}.{module.name}")
    _loaded = True


@dataclass(frozen=True)
class Selection:
    task: Task
    subtasks: tuple[str, ...]


def all_tasks() -> list[Task]:
    load_plugins()
    return [TASKS.get(name)() for name in TASKS.names()]


def resolve(names: Sequence[str]) -> list[Selection]:
    """Each name is a task (all its subtasks) or one subtask, e.g. ``mmlu_anatomy``."""
    tasks = all_tasks()
    by_subtask = {sub: task for task in tasks for sub in task.subtasks()}
    by_name = {task.name: task for task in tasks}
    chosen: dict[str, list[str]] = {}
    for raw in names:
        name = raw.strip()
        if name in by_name:
            subs = by_name[name].subtasks()
            owner = by_name[name]
        elif name in by_subtask:
            subs, owner = [name], by_subtask[name]
        else:
            known = sorted(set(by_name) | set(by_subtask))
            raise UnknownNameError(
                f"unknown task {name!r}{did_you_mean(name, known)} (`evalharness tasks` lists them)"
            )
        picked = chosen.setdefault(owner.name, [])
        picked.extend(s for s in subs if s not in picked)
    return [Selection(by_name[name], tuple(subs)) for name, subs in chosen.items()]
