"""The Llama 2 model card as data: reference numbers, benchmark → task mappings, group rules.

The card lives in ``reports/llama2_card.json`` (installed as ``evalharness.reports``). Card numbers
are percentages exactly as the paper prints them, each with its source table; ``reference()``
hands them to code that compares against ``results.json`` as fractions (0.453), the harness's unit.

Group rules follow the paper (checked against its Tables 19–25, see ../shared/PROTOCOL.md §1):
``mean`` is the plain mean of the members; ``question_weighted`` weights each member by its number
of questions (MMLU's categories, AGIEval's 8 English tasks). A benchmark whose ``aggregate`` is
``subtask_mean`` (BBH) is the plain mean of its task's subtasks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from evalharness.core.errors import EvalHarnessError, UnknownNameError
from evalharness.core.registry import did_you_mean

CARD_FILE = "llama2_card.json"
RULES = ("mean", "question_weighted")


@dataclass(frozen=True)
class ReferenceValue:
    """One card number, in the harness's unit (a fraction: 0.453 for the card's 45.3)."""

    value: float
    source: str  # "Table 20"
    higher_is_better: bool
    shots: int | str  # an int, or a range the paper states ("3-5")
    label: str  # "MMLU (all), 5-shot, acc (question-weighted)"

    @property
    def percent(self) -> float:
        return 100 * self.value


@dataclass(frozen=True)
class Benchmark:
    id: str
    label: str
    task: str  # the harness task that measures it
    metric: str  # the metric name in results.json
    metric_label: str
    shots: int | str
    higher_is_better: bool
    source: str
    values: Mapping[str, float]  # card model → percent
    size: int | None = None  # number of questions in the full benchmark
    subtask: str | None = None  # measured by one subtask of ``task``
    part: str | None = None  # measured by a group (or per-group subtask) of ``task``
    aliases: tuple[str, ...] = ()  # other spellings of ``part``
    aggregate: str = "metric"  # or "subtask_mean"
    subtasks: int | None = None  # the task's subtask count (coverage, when results.json does not say)
    provisional: bool = False  # the task had not landed when the mapping was written
    decimals: int = 1
    note: str = ""
    mapping_note: str = ""
    other: tuple[Mapping[str, Any], ...] = ()  # further card numbers (other shots / pass@k)

    @property
    def address(self) -> str:
        """``task``, a subtask name, or ``task/part`` (a group of the task): see ``measured``."""
        if self.subtask:
            return self.subtask
        return f"{self.task}/{self.part}" if self.part else self.task

    def shots_text(self) -> str:
        return f"{self.shots}-shot"


@dataclass(frozen=True)
class CardGroup:
    """A group of the card (a Table 3 category or a safety number) and the rule that combines its members."""

    id: str
    label: str
    section: str  # "academic" (Table 3) or "safety"
    rule: str
    members: tuple[str, ...]
    source: str
    values: Mapping[str, float]
    rule_text: str = ""
    printed_as: Mapping[str, str] = field(default_factory=dict)  # model → the member printed alone
    footnote: str = ""
    check: bool = True  # reproducible from the card's own per-benchmark numbers
    check_tolerance: float = 0.05
    decimals: int = 1
    higher_is_better: bool = True


@dataclass(frozen=True)
class CardModel:
    """A model the card has numbers for (``llama-2-7b``, ``llama-2-13b-chat``...)."""

    id: str
    label: str
    chat: bool


@dataclass(frozen=True)
class GroupReference:
    """What the card says for a group: the printed number and what its rule gives."""

    printed: float | None
    recomputed: float | None  # the rule applied to the card's own member numbers
    printed_alone: str | None  # the member the card printed instead of the rule (Math 7B/13B)

    @property
    def compare_to(self) -> float | None:
        """The value a measurement following the rule is compared with."""
        return self.recomputed if self.printed_alone and self.recomputed is not None else self.printed


@dataclass(frozen=True)
class Card:
    name: str
    title: str
    source: str
    tables: Mapping[str, str]
    models: Mapping[str, CardModel]
    benchmarks: Mapping[str, Benchmark]
    groups: tuple[CardGroup, ...]
    provisional_note: str = ""

    def model(self, name: str) -> CardModel:
        if name not in self.models:
            raise UnknownNameError(f"unknown card model {name!r}{did_you_mean(name, list(self.models))}"
                                   f" (one of {', '.join(self.models)})")
        return self.models[name]

    def group(self, group_id: str) -> CardGroup:
        return next(g for g in self.groups if g.id == group_id)

    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(b.task for b in self.benchmarks.values()))

    def subtask_count(self, task: str) -> int | None:
        """How many subtasks ``task`` has, as the card records it (None when it does not say)."""
        counts = [b.subtasks for b in self.benchmarks.values() if b.task == task and b.subtasks]
        return max(counts) if counts else None

    def members(self, group: CardGroup) -> list[Benchmark]:
        return [self.benchmarks[m] for m in group.members]

    def recompute(self, group: CardGroup, model: str) -> float | None:
        """The group rule fed with the card's own per-benchmark numbers (None if any is missing)."""
        members = self.members(group)
        values = [b.values.get(model) for b in members]
        if any(v is None for v in values):
            return None
        return combine(group.rule, values, [b.size or 0 for b in members])  # type: ignore[arg-type]

    def group_reference(self, group: CardGroup, model: str) -> GroupReference:
        return GroupReference(group.values.get(model), self.recompute(group, model), group.printed_as.get(model))


def combine(rule: str, values: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """A group's value from its members' values, by the card's rule."""
    if not values:
        raise ValueError("a group needs at least one member value")
    if rule == "mean":
        return math.fsum(values) / len(values)
    if rule == "question_weighted":
        if weights is None or len(weights) != len(values) or sum(weights) <= 0:
            raise ValueError("question_weighted needs one positive weight per member")
        return math.fsum(v * w for v, w in zip(values, weights, strict=True)) / math.fsum(weights)
    raise ValueError(f"unknown group rule {rule!r} (one of {', '.join(RULES)})")


def combine_stderr(rule: str, stderrs: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Standard error of ``combine`` with members treated as independent."""
    if rule == "mean":
        return math.sqrt(math.fsum(s * s for s in stderrs)) / len(stderrs)
    assert weights is not None
    return math.sqrt(math.fsum((w * s) ** 2 for w, s in zip(weights, stderrs, strict=True))) / math.fsum(weights)


def round_half_up(value: float, decimals: int = 1) -> float:
    """Round as the paper prints (35.15 → 35.2), where Python's round() gives 35.1."""
    exact = Decimal(repr(round(value, 9)))
    return float(exact.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))


def _benchmark(bid: str, raw: Mapping[str, Any]) -> Benchmark:
    known = {f for f in Benchmark.__dataclass_fields__} - {"id"}
    extra = sorted(set(raw) - known)
    if extra:
        raise EvalHarnessError(f"card benchmark {bid}: unknown field(s) {', '.join(extra)}")
    fields = dict(raw)
    fields["aliases"] = tuple(fields.get("aliases", ()))
    fields["other"] = tuple(fields.get("other", ()))
    return Benchmark(id=bid, **fields)


def _group(raw: Mapping[str, Any], benchmarks: Mapping[str, Benchmark]) -> CardGroup:
    fields = dict(raw)
    fields["members"] = tuple(fields["members"])
    group = CardGroup(**fields)
    missing = [m for m in group.members if m not in benchmarks]
    if missing or group.rule not in RULES:
        raise EvalHarnessError(f"card group {group.id}: unknown member(s) {missing} or rule {group.rule!r}")
    if group.rule == "question_weighted" and any(not benchmarks[m].size for m in group.members):
        raise EvalHarnessError(f"card group {group.id}: question_weighted members need a size")
    return group


def parse_card(raw: Mapping[str, Any]) -> Card:
    benchmarks = {bid: _benchmark(bid, b) for bid, b in raw["benchmarks"].items()}
    models = {mid: CardModel(mid, m["label"], bool(m.get("chat"))) for mid, m in raw["models"].items()}
    for b in benchmarks.values():
        unknown = set(b.values) - set(models)
        if unknown:
            raise EvalHarnessError(f"card benchmark {b.id}: values for unknown model(s) {sorted(unknown)}")
    return Card(
        name=raw["name"], title=raw["title"], source=raw["source"], tables=dict(raw.get("tables", {})),
        models=models, benchmarks=benchmarks,
        groups=tuple(_group(g, benchmarks) for g in raw["groups"]),
        provisional_note=raw.get("provisional_note", ""),
    )


@lru_cache(maxsize=4)
def load_card(path: str | None = None) -> Card:
    """The bundled Llama 2 card, or a card file of the same schema."""
    if path is None:
        text = resources.files("evalharness.reports").joinpath(CARD_FILE).read_text("utf-8")
        where = CARD_FILE
    else:
        text, where = Path(path).read_text("utf-8"), path
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvalHarnessError(f"card {where}, line {exc.lineno}: {exc.msg}") from None
    return parse_card(raw)


def card_task_names() -> tuple[str, ...]:
    """Harness task names the card's numbers map to, registered or not yet (e.g. "humaneval").

    Pure data: which of them this installation can run is for ``core.task_selection`` to decide.
    """
    return load_card().tasks()


CARD_TASKS: tuple[str, ...] = card_task_names()


def reference(card: str, *, parts: bool = False) -> dict[tuple[str, str], ReferenceValue]:
    """``{(task, metric): ReferenceValue}`` for one card model, e.g. ``reference("llama-2-7b")``.

    Keys name a harness task, or a subtask (AGIEval's ``agieval_lsat_ar``); with ``parts=True`` also
    ``task/group`` keys (``mmlu/humanities``, ``toxigen/asian``). ``measured(results, task, metric)``
    finds the run's value for any of these keys.
    """
    loaded = load_card()
    loaded.model(card)
    out: dict[tuple[str, str], ReferenceValue] = {}
    for b in loaded.benchmarks.values():
        if card not in b.values or (b.part and not parts):
            continue
        label = f"{b.label}, {b.shots_text()}, {b.metric_label}"
        value = round(b.values[card] / 100, 10)
        out[(b.address, b.metric)] = ReferenceValue(value, b.source, b.higher_is_better, b.shots, label)
    return out


def shots_match(card_shots: int | str, run_shots: int | None) -> bool:
    """True when the run's shot count is the card's (or inside the card's stated range)."""
    if run_shots is None:
        return False
    if isinstance(card_shots, int):
        return card_shots == run_shots
    low, _, high = str(card_shots).partition("-")
    return int(low) <= run_shots <= int(high or low)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def find_part(table: Mapping[str, Any], task: str, names: Sequence[str]) -> Any:
    """A group or subtask entry named like any of ``names`` (case, spacing and task prefix ignored)."""
    wanted = {_norm(n) for n in names} | {_norm(f"{task}_{n}") for n in names}
    for key, entry in table.items():
        if _norm(key) in wanted:
            return entry
    return None


def measured(results: Mapping[str, Any], task: str, metric: str,
             aliases: Sequence[str] = ()) -> dict[str, Any] | None:
    """The run's ``{value, stderr, n}`` for a ``reference()`` key, or None if it did not run."""
    tasks = results.get("tasks", {})
    if task in tasks:
        return tasks[task].get("metrics", {}).get(metric)
    owner, _, part = task.partition("/")
    if part and owner in tasks:
        entry = tasks[owner]
        names = [part, *aliases]
        found = find_part(entry.get("groups", {}), owner, names) or find_part(entry.get("subtasks", {}), owner, names)
        return found.get(metric) if found else None
    for entry in tasks.values():
        if task in entry.get("subtasks", {}):
            return entry["subtasks"][task].get(metric)
    return None


_MODEL_NAME = re.compile(r"llama-?2-(7|13|70)b(-chat)?", re.IGNORECASE)


def infer_card_model(model_name: str) -> str | None:
    """``meta-llama/Llama-2-13b-chat-hf`` → ``llama-2-13b-chat``; None when it names no card model."""
    found = _MODEL_NAME.search(Path(model_name.rstrip("/")).name) or _MODEL_NAME.search(model_name)
    if not found:
        return None
    return f"llama-2-{found.group(1)}b" + ("-chat" if found.group(2) else "")
