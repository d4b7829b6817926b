"""Declared datasets: a hub id for online users, and a local adapter for the original files.

A task declares ``Dataset(hub_id, hub_config, split, local=...)``. Online, records come from
the Hugging Face Hub through ``datasets``; with a local data root (``--data-dir``) the adapter
reads the benchmark's original release files and yields records **in the hub's schema**, so a
task maps one record shape to its ``Doc`` whichever way the data came. ``{split}`` and
``{subset}`` in paths and hub configs are filled in per call (MMLU's subset is its subject).
Adapters configured by declaration beyond a path (named CSV columns, answer maps, prompts drawn
from a pool of statements) are in ``evalharness.data.adapters``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from evalharness.core.errors import DataError
from evalharness.data.source import DataSource

Record = dict[str, Any]
RowMapper = Callable[[list[str]], Record]


class LocalAdapter(Protocol):
    """Reads records (in the hub's schema) from a local data root."""

    @property
    def path(self) -> str | Mapping[str, str]: ...

    def read(self, data: DataSource, split: str, subset: str | None) -> list[Record]: ...


def fill_path(template: str | Mapping[str, str], split: str, subset: str | None) -> tuple[str, ...]:
    """An adapter's path for one split and subset, as parts under the data root."""
    path = template[split] if isinstance(template, Mapping) else template
    return tuple(path.format(split=split, subset=subset or "").split("/"))


def location(data: DataSource, parts: Sequence[str]) -> str:
    """Where a file is, for error messages."""
    return str(data.root.joinpath(*parts)) if data.root else "/".join(parts)


@dataclass(frozen=True)
class CsvRows:
    """A CSV file with exactly ``columns`` fields per row; ``to_record`` maps a row.

    ``header``: False (none), or the exact header row the file must start with.
    """

    path: str | Mapping[str, str]
    columns: int
    to_record: RowMapper
    header: tuple[str, ...] | bool = False

    def read(self, data: DataSource, split: str, subset: str | None) -> list[Record]:
        parts = fill_path(self.path, split, subset)
        rows = data.read_csv(*parts, columns=self.columns)
        skip = 1 if self.header else 0
        if isinstance(self.header, tuple) and (not rows or tuple(rows[0]) != self.header):
            raise DataError(f"{location(data, parts)}: expected the header {','.join(self.header)}")
        return [_mapped(self.to_record, row, data, parts, i + 1 + skip) for i, row in enumerate(rows[skip:])]


@dataclass(frozen=True)
class TsvRows:
    """A tab-separated file with a header row; each record maps column name → text.

    ``to_record`` (optional) maps that record to the hub's schema; its errors name the file and line.
    """

    path: str | Mapping[str, str]
    to_record: Callable[[Record], Record] | None = None

    def read(self, data: DataSource, split: str, subset: str | None) -> list[Record]:
        parts = fill_path(self.path, split, subset)
        lines = [(n, line.rstrip("\r")) for n, line in enumerate(data.read_text(*parts).split("\n"), 1) if line.strip()]
        if not lines:
            raise DataError(f"{location(data, parts)}: empty file")
        header = lines[0][1].split("\t")
        records = []
        for line_no, line in lines[1:]:
            cells = line.split("\t")
            if len(cells) != len(header):
                raise DataError(
                    f"{location(data, parts)}, line {line_no}: expected {len(header)} tab-separated"
                    f" fields, got {len(cells)}"
                )
            record = dict(zip(header, cells, strict=True))
            records.append(record if self.to_record is None else _mapped(self.to_record, record, data, parts, line_no))
        return records


@dataclass(frozen=True)
class TextLines:
    """One record per line of a text file (gunzipped when the name ends in .gz):
    ``{"text": line, "line": n, "file": the file's name}``, or what ``to_record`` maps it to; an
    empty line is an error naming the file and line."""

    path: str | Mapping[str, str]
    to_record: Callable[[Record], Record] | None = None

    def read(self, data: DataSource, split: str, subset: str | None) -> list[Record]:
        parts = fill_path(self.path, split, subset)
        lines = data.read_text(*parts).split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                raise DataError(f"{location(data, parts)}, line {line_no}: empty line")
        records: list[Record] = [{"text": line, "line": n, "file": parts[-1]} for n, line in enumerate(lines, start=1)]
        if self.to_record is None:
            return records
        return [_mapped(self.to_record, r, data, parts, n) for n, r in enumerate(records, start=1)]


@dataclass(frozen=True)
class LabelFile:
    """Labels kept one per line in a file beside the records (PIQA's and SIQA's ``.lst``)."""

    path: str | Mapping[str, str]
    field: str = "label"
    parse: Callable[[str], Any] = int


@dataclass(frozen=True)
class JsonLines:
    """JSON Lines (gzipped when the name ends in .gz), optionally with a label file beside it."""

    path: str | Mapping[str, str]
    required: tuple[str, ...] = ()
    labels: LabelFile | None = None
    to_record: Callable[[Record], Record] | None = None

    def read(self, data: DataSource, split: str, subset: str | None) -> list[Record]:
        parts = fill_path(self.path, split, subset)
        records = data.read_jsonl(*parts, required=self.required)
        if self.labels is not None:
            records = self._with_labels(data, records, fill_path(self.labels.path, split, subset), parts)
        if self.to_record is not None:
            records = [_mapped(self.to_record, r, data, parts, i + 1) for i, r in enumerate(records)]
        return records

    def _with_labels(
        self, data: DataSource, records: list[Record], label_parts: tuple[str, ...], parts: tuple[str, ...]
    ) -> list[Record]:
        assert self.labels is not None
        lines = [line.strip() for line in data.read_text(*label_parts).split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        if len(lines) != len(records):
            first = (  # the first line of the label file out of step with the records
                f"line {len(lines) + 1} should label record {len(lines) + 1}" if len(lines) < len(records)
                else f"line {len(records) + 1} labels no record"
            )
            raise DataError(
                f"{location(data, label_parts)}: {len(lines)} labels for the {len(records)} records"
                f" of {location(data, parts)} ({first})"
            )
        out = []
        for line_no, (record, text) in enumerate(zip(records, lines, strict=False), start=1):
            try:
                out.append({**record, self.labels.field: self.labels.parse(text)})
            except ValueError:
                raise DataError(f"{location(data, label_parts)}, line {line_no}: bad label {text!r}") from None
        return out


@dataclass(frozen=True)
class JsonDocument:
    """One JSON document (gzipped when the name ends in .gz); ``to_records`` flattens it."""

    path: str | Mapping[str, str]
    to_records: Callable[[Any], list[Record]]

    def read(self, data: DataSource, split: str, subset: str | None) -> list[Record]:
        parts = fill_path(self.path, split, subset)
        document = data.read_json(*parts)
        try:
            return self.to_records(document)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{location(data, parts)}: unexpected structure ({exc})") from None


def _mapped(mapper: Callable[[Any], Record], row: Any, data: DataSource, parts: Sequence[str], line: int) -> Record:
    try:
        return mapper(row)
    except DataError as exc:
        raise DataError(f"{location(data, parts)}, line {line}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise DataError(f"{location(data, parts)}, line {line}: {detail}") from None


@dataclass(frozen=True)
class Dataset:
    """Where a benchmark's records come from, online and offline."""

    hub_id: str  # "": local files only (no hub copy), ``offline_hint`` says where they come from
    hub_config: str | None
    split: str
    local: LocalAdapter | None = None
    hub_to_record: Callable[[Record], Record] | None = None  # where the hub's schema needs help
    offline_hint: str = ""  # what to say when the data is on only one side (hub or local files)

    def where(self, data: DataSource, split: str, subset: str | None = None) -> str:
        """The file (local) or hub dataset a split is read from, for error messages."""
        if data.is_local and self.local is not None:
            return location(data, fill_path(self.local.path, split, subset))
        config = self.hub_config.format(subset=subset or "") if self.hub_config else None
        return f"{self.hub_id}{'/' + config if config else ''} [{split}]"

    def records(self, data: DataSource, split: str, subset: str | None = None) -> list[Record]:
        if not data.is_local and not self.hub_id:
            raise DataError(self.offline_hint or "these files are read from a local data root only; pass --data-dir")
        if data.is_local:
            if self.local is None:
                raise DataError(
                    f"{self.hub_id}: no local copy is read by this harness"
                    f"{'; ' + self.offline_hint if self.offline_hint else ''}; it loads from the hub"
                )
            return self.local.read(data, split, subset)
        config = self.hub_config.format(subset=subset or "") if self.hub_config else None
        rows = [dict(r) for r in data.hub(self.hub_id, config, split)]
        if self.hub_to_record is None:
            return rows
        return [self.hub_to_record(r) for r in rows]


@dataclass(frozen=True)
class Fewshot:
    """Where answered examples come from: a split of the task's dataset or another source.

    ``first_n``: the first k records, the same for every document (MMLU's dev rows).
    ``seeded``: k records drawn per document, seeded by the run seed and the document.
    """

    split: str
    sampling: Literal["first_n", "seeded"] = "first_n"
    dataset: Dataset | None = None  # None: the task's own dataset
    note: str = ""  # recorded in results.json (e.g. an approximation of the paper's pool)

