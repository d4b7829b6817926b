"""Local adapters configured by declaration, for release files whose records need more than a path.

- ``CsvTable``: a CSV file with a header row, its columns renamed to the hub's fields and
  ``;``-separated lists split (TruthfulQA.csv);
- ``AnswerMaps``: ``JsonDocument``'s converter for questions whose answers are {answer: label}
  objects (TruthfulQA's mc_task.json);
- ``prompt_line``: ``TextLines``' converter for prompt files that store line breaks as the two
  characters ``\\n`` (ToxiGen's prompt files);
- ``DrawnLists``: prompts drawn from a pool of labelled statements in the same ``- …`` list
  format (ToxiGen's revised set).

Each yields records in the hub's schema (or, for prompts, ``{"prompt", "prompt_id"}``), so the
tasks that share a release (TruthfulQA's three) share its adapters.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from evalharness.core.errors import DataError
from evalharness.data.datasets import CsvRows, Record, fill_path, location
from evalharness.data.source import DataSource


def split_list(text: str, separator: str = ";") -> list[str]:
    """A list kept in one CSV cell ("a; b; c"), split as Hugging Face's loaders do: items
    stripped, empty items dropped."""
    return [item.strip() for item in text.strip().split(separator) if item.strip()]


@dataclass(frozen=True)
class CsvTable:
    """A CSV file that starts with the header ``columns`` names (header → the hub's field name,
    in file order); every row becomes a record with those fields. ``lists`` fields are split with
    ``split_list`` and must keep at least one item; a repeated header row is an error."""

    path: str | Mapping[str, str]
    columns: Mapping[str, str]
    lists: tuple[str, ...] = ()
    separator: str = ";"

    def read(self, data: DataSource, split: str, subset: str | None) -> list[Record]:
        header = tuple(self.columns)
        return CsvRows(self.path, len(header), self.to_record, header=header).read(data, split, subset)

    def to_record(self, row: list[str]) -> Record:
        if tuple(row) == tuple(self.columns):
            raise ValueError("the header row appears twice")
        record: Record = dict(zip(self.columns.values(), row, strict=True))
        for name in self.lists:
            record[name] = split_list(record[name], self.separator)
            if not record[name]:
                raise ValueError(f"no items in {name} (a {self.separator!r}-separated list)")
        return record


@dataclass(frozen=True)
class AnswerMaps:
    """A JSON list of questions whose ``maps`` fields are {answer: label} objects, each turned into
    the hub's ``{"choices": [answers], "labels": [labels]}``; ``fields`` are copied as they are."""

    fields: tuple[str, ...]
    maps: tuple[str, ...]

    def __call__(self, document: Any) -> list[Record]:
        if not isinstance(document, list):
            raise ValueError("expected a JSON list of questions")
        return [
            {**{key: row[key] for key in self.fields},
             **{key: {"choices": list(row[key]), "labels": list(row[key].values())} for key in self.maps}}
            for row in document
        ]  # fmt: skip


def prompt_line(record: Record) -> Record:
    """A ``TextLines`` record of a prompt file whose line breaks are stored as the two characters
    ``\\n``: the prompt with those turned into newlines (nothing else changed), and its id
    ``<file>:<line>`` (1-based line of the decompressed file)."""
    return {"prompt": str(record["text"]).replace("\\n", "\n"), "prompt_id": f"{record['file']}:{record['line']}"}


def list_prompt(statements: Iterable[str]) -> str:
    """Statements in ToxiGen's prompt format, ``- s1\\n- s2\\n…\\n-`` (inner whitespace collapsed)."""
    return "".join(f"- {' '.join(s.split())}\n" for s in statements) + "-"


STATEMENT_FIELDS = frozenset({"id", "text", "label", "target_groups"})


@dataclass(frozen=True)
class DrawnLists:
    """Prompts drawn from a JSON list of labelled statements ({id, text, label, target_groups}).

    ``pools`` maps a subset to the (label, group) of its statements: those with that label whose
    ``target_groups`` include the group, in id order. Prompt k of a subset is ``per_prompt`` of them
    drawn without replacement, seeded by ``seed``, the subset and k, so prompt k is the same however
    many are drawn; ``count`` prompts per subset, as ``{"prompt", "prompt_id": "<file>:ids=…"}``.
    """

    path: str
    pools: Mapping[str, tuple[str, str]]
    count: int
    seed: int
    per_prompt: int = 6

    def read(self, data: DataSource, split: str, subset: str | None) -> list[Record]:
        parts = fill_path(self.path, split, subset)
        label, group = self.pools[subset or ""]
        rows = data.read_json(*parts)
        if not isinstance(rows, list):
            raise DataError(f"{location(data, parts)}: expected a JSON list")
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not STATEMENT_FIELDS <= set(row):
                raise DataError(f"{location(data, parts)}, record {i}: needs id, text, label, target_groups")
        pool = sorted((r for r in rows if r["label"] == label and group in r["target_groups"]), key=lambda r: r["id"])
        if len(pool) < self.per_prompt:
            raise DataError(
                f"{parts[-1]}: only {len(pool)} {label} statements for {group!r};"
                f" {self.per_prompt} are needed per prompt"
            )
        records = []
        for k in range(self.count):
            drawn = random.Random(f"{self.seed}:{subset}:{k}").sample(pool, self.per_prompt)
            ids = ",".join(str(r["id"]) for r in drawn)
            records.append({"prompt": list_prompt(str(r["text"]) for r in drawn), "prompt_id": f"{parts[-1]}:ids={ids}"})
        return records
