"""Turn task names from the command line into (task, subtasks) to run."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalharness.core.errors import EvalHarnessError, UnknownNameError
from evalharness.core.registry import did_you_mean
from evalharness.core.task import TASKS, Task
from evalharness.data.source import DataSource

log = logging.getLogger(__name__)

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


CARD_GROUP = "llama2_card"


def group_names() -> list[str]:
    """``llama2_card`` and the card's Table 3 categories usable as ``--tasks`` names
    (``commonsense``, ``world_knowledge``, ``reading_comprehension``, ``code``…): those whose id
    names no card task, so a category never shadows a benchmark (MMLU, BBH, Math are tasks)."""
    from evalharness.reporting.card import card_task_names, load_card

    tasks = set(card_task_names())
    return [CARD_GROUP] + [g.id for g in load_card().groups if g.section == "academic" and g.id not in tasks]


def group_tasks(group: str) -> list[str]:
    """The task names a group stands for, from the card data (registered or not)."""
    from evalharness.reporting.card import card_task_names, load_card

    if group == CARD_GROUP:
        return list(card_task_names())
    card = load_card()
    return list(dict.fromkeys(card.benchmarks[member].task for member in card.group(group).members))


def unavailable(task: Task, data: DataSource | None) -> str | None:
    """Why a task cannot read its data from a local root (it loads from the hub only), or None."""
    if data is None or not data.is_local:
        return None
    sources = [task.dataset, task.fewshot.dataset if task.fewshot is not None else None]
    hub_only = [d for d in sources if d is not None and d.local is None]
    if not hub_only:
        return None
    return f"no local copy of {hub_only[0].hub_id}, which loads from the Hugging Face Hub only"


def _expand_groups(names: Sequence[str], data: DataSource | None = None) -> list[str]:
    """Group names (``llama2_card``, ``reading_comprehension``…) → their registered member tasks.

    The card (``reporting.card``) is pure data and lists tasks whether or not they have landed;
    which of them can run is decided here, where the task registry lives. A member not
    registered yet, or whose data is not available offline (``--data-dir`` and a hub-only task
    such as QuAC), is skipped with a warning; the report then shows it as not run. A task named
    on its own is never skipped: it fails with the reason instead.
    """
    load_plugins()
    groups = set(group_names())
    expanded = []
    for raw in names:
        name = raw.strip()
        if name not in groups or name in TASKS:
            expanded.append(name)
            continue
        members = group_tasks(name)
        missing = [t for t in members if t not in TASKS]
        if missing and name != CARD_GROUP:
            log.warning("%s: %s not in this installation yet; running the other members", name, ", ".join(missing))
        runnable = []
        for task_name in (t for t in members if t in TASKS):
            reason = unavailable(TASKS.get(task_name)(), data)
            if reason:
                log.warning("%s: %s is not available offline (%s); skipped, the report shows it as not run",
                            name, task_name, reason)
            else:
                runnable.append(task_name)
        if not runnable:
            raise EvalHarnessError(f"{name}: none of its tasks ({', '.join(members)}) can run here")
        expanded += runnable
    return expanded


def resolve(
    names: Sequence[str], options: Mapping[str, Any] | None = None, data: DataSource | None = None
) -> list[Selection]:
    """Each name is a task (all its subtasks), one subtask (``mmlu_anatomy``) or a group
    (``llama2_card``, ``reading_comprehension``…; ``data`` decides which members can run offline).

    ``options`` (from --task-args) go to every selected task that has them; an option that no
    selected task knows is an error.
    """
    tasks = all_tasks()
    by_subtask = {sub: task for task in tasks for sub in task.subtasks()}
    by_name = {task.name: task for task in tasks}
    chosen: dict[str, list[str]] = {}
    for raw in _expand_groups(names, data):
        name = raw.strip()
        if name in by_name:
            subs = by_name[name].subtasks()
            owner = by_name[name]
        elif name in by_subtask:
            subs, owner = [name], by_subtask[name]
        else:
            names_known = sorted(set(by_name) | set(by_subtask) | set(group_names()))
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
