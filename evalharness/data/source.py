"""Where benchmark data comes from: the Hugging Face Hub by default, or a local data root.

The local root (``--data-dir`` or ``EVALHARNESS_DATA_DIR``) holds one folder per benchmark in its
original file layout. Every file read is hashed, so results record exactly which data produced
them.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalharness.core.errors import DataError

DATA_DIR_ENV = "EVALHARNESS_DATA_DIR"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DataSource:
    """Reads benchmark files and remembers the identity of everything it read."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
        self.root: Path | None = None
        if chosen is not None:
            root = Path(chosen).expanduser()
            if not root.is_dir():
                origin = "--data-dir" if data_dir is not None else DATA_DIR_ENV
                raise DataError(f"{origin} {str(chosen)!r} is not a directory")
            self.root = root.resolve()
        self.identity: dict[str, str] = {}  # file (relative to root) or hub dataset -> sha/revision
        self._parsed_json: dict[Path, Any] = {}  # a JSON file read by several subtasks parses once

    @property
    def is_local(self) -> bool:
        return self.root is not None

    def path(self, *parts: str) -> Path:
        assert self.root is not None, "local path requested without a data root"
        path = self.root.joinpath(*parts)
        if not path.is_file():
            raise DataError(f"data file {path} is missing")
        return path

    def _text(self, path: Path, encoding: str = "utf-8") -> str:
        try:
            raw = path.read_bytes()
            self.identity[str(path.relative_to(self.root or path.anchor))] = hashlib.sha256(raw).hexdigest()
            if path.suffix == ".gz":
                raw = gzip.decompress(raw)
            return raw.decode(encoding)
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            raise DataError(f"data file {path} is unreadable: {exc}") from exc

    def read_text(self, *parts: str) -> str:
        """A whole text file (gunzipped if it ends in .gz), hashed like every other read."""
        return self._text(self.path(*parts))

    def read_csv(self, *parts: str, columns: int, header: bool = False) -> list[list[str]]:
        """Rows of a CSV with exactly ``columns`` fields; text stays text (no NaN for 'None')."""
        path = self.path(*parts)
        reader = csv.reader(io.StringIO(self._text(path, "utf-8-sig"), newline=""))
        rows = []
        try:
            for line_no, row in enumerate(reader, start=1):
                if header and line_no == 1:
                    continue
                if len(row) != columns:
                    raise DataError(
                        f"{path}, line {reader.line_num}: expected {columns} columns, got {len(row)}"
                    )
                rows.append(row)
        except csv.Error as exc:
            raise DataError(f"{path}, line {reader.line_num}: {exc}") from exc
        return rows

    def read_jsonl(self, *parts: str, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        path = self.path(*parts)
        rows = []
        for line_no, line in enumerate(self._text(path).split("\n"), start=1):  # not splitlines: U+0085 is text
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {line_no}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {line_no}: expected a JSON object")
            missing = [k for k in required if k not in row]
            if missing:
                raise DataError(f"{path}, line {line_no}: missing field(s) {', '.join(missing)}")
            rows.append(row)
        return rows

    def read_json(self, *parts: str) -> Any:
        """A parsed JSON file; parsed once per run and shared, so callers must not modify it."""
        path = self.path(*parts)
        if path not in self._parsed_json:
            try:
                self._parsed_json[path] = json.loads(self._text(path))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {exc.lineno}: invalid JSON ({exc.msg})") from exc
        return self._parsed_json[path]

    def hub(self, dataset: str, config: str | None, split: str) -> Iterator[dict[str, Any]]:
        """Rows of a hub dataset split, through `datasets`."""
        try:
            import datasets

            loaded = datasets.load_dataset(dataset, config, split=split)
        except Exception as exc:  # datasets raises many types for network and missing data
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"could not load {dataset}"
                f"{'/' + config if config else ''} [{split}] from the Hugging Face Hub: {first}"
                f" (offline? pass --data-dir or set {DATA_DIR_ENV})"
            ) from exc
        fingerprint = getattr(loaded, "_fingerprint", None) or "unknown"
        self.identity[f"hub:{dataset}/{config or ''}/{split}"] = str(fingerprint)
        return iter(loaded)
