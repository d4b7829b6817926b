"""Turn task names from the command line into (task, subtasks) to run."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalharness.core.errors import UnknownNameError
from evalharness.core.registry import did_you_mean
from evalharness.core.task import TASKS, Task

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


def _expand_groups(names: Sequence[str]) -> list[str]:
    """``llama2_card``: every card task this installation has registered, each with its card shot count.

    The card (``reporting.card``) is pure data and lists tasks whether or not they have landed;
    which of them can run is decided here, where the task registry lives.
    """
    expanded = []
    for name in names:
        if name.strip() == "llama2_card":
            from evalharness.reporting.card import card_task_names

            load_plugins()
            expanded += [t for t in card_task_names() if t in TASKS]
        else:
            expanded.append(name)
    return expanded


def resolve(names: Sequence[str], options: Mapping[str, Any] | None = None) -> list[Selection]:
    """Each name is a task (all its subtasks) or one subtask, e.g. ``mmlu_anatomy``.

    ``options`` (from --task-args) go to every selected task that has them; an option that no
    selected task knows is an error.
    """
    tasks = all_tasks()
    by_subtask = {sub: task for task in tasks for sub in task.subtasks()}
    by_name = {task.name: task for task in tasks}
    chosen: dict[str, list[str]] = {}
    for raw in _expand_groups(names):
        name = raw.strip()
        if name in by_name:
            subs = by_name[name].subtasks()
            owner = by_name[name]
        elif name in by_subtask:
            subs, owner = [name], by_subtask[name]
        else:
            names_known = sorted(set(by_name) | set(by_subtask) | {"llama2_card"})
            raise UnknownNameError(
                f"unknown task {name!r}{did_you_mean(name, names_known)} (`evalharness tasks` lists them)"
            )
        picked = chosen.setdefault(owner.name, [])
        picked.extend(s for s in subs if s not in picked)
    options = dict(options or {})
    known = {key for name in chosen for key in by_name[name].defaults}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UnknownNameError(
            f"--task-args {unknown[0]!r} is not an option of {', '.join(chosen)}"
            f"{did_you_mean(unknown[0], sorted(known))}"
        )
    return [
        Selection(
            type(by_name[name])(**{k: v for k, v in options.items() if k in by_name[name].defaults}),
            tuple(subs),
        )
        for name, subs in chosen.items()
    ]
