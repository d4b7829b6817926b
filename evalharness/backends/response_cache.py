"""A response cache in SQLite (WAL mode): every computed batch is stored as it completes.

Keys hash the model fingerprint together with the full request, so a re-run — after a crash,
a kill -9 or a deliberate stop — computes only what is missing. Several runs may share one file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evalharness.core.requests import (
    GenerateResponse,
    LoglikelihoodResponse,
    Request,
    Response,
)

log = logging.getLogger(__name__)

CACHE_ENV = "EVALHARNESS_CACHE"
SCHEMA = "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL)"
# Fingerprint fields that do not change a model's outputs.
NEUTRAL_FIELDS = ("model",)


def default_cache_path() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "evalharness" / "responses.sqlite"


def fingerprint_key(fingerprint: Mapping[str, Any]) -> str:
    relevant = {k: v for k, v in fingerprint.items() if k not in NEUTRAL_FIELDS}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def request_key(model_key: str, request: Request) -> str:
    payload = {"model": model_key, "type": type(request).__name__, **dataclasses.asdict(request)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | os.PathLike[str], fingerprint: Mapping[str, Any]) -> None:
        self.path = Path(path).expanduser()
        self.model_key = fingerprint_key(fingerprint)
        self.hits = 0
        self.stored = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            log.warning("response cache %s is corrupt (%s); rebuilding it", self.path, exc)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(SCHEMA)
        db.execute("SELECT count(*) FROM responses LIMIT 1").fetchone()  # detects a corrupt file
        return db

    def keys(self, requests: Sequence[Request]) -> list[str]:
        return [request_key(self.model_key, r) for r in requests]

    def get_many(self, keys: Sequence[str]) -> dict[str, Response]:
        found: dict[str, Response] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite caps the number of bound parameters
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, kind, value FROM responses WHERE key IN ({marks})", chunk
            ).fetchall()
            for key, kind, value in rows:
                found[key] = _decode(kind, value)
        self.hits += len(found)
        return found

    def put_many(self, items: Iterable[tuple[str, Response]]) -> None:
        rows = [(key, type(r).__name__, json.dumps(dataclasses.asdict(r))) for key, r in items]
        if not rows:
            return
        with self._db:  # one transaction per batch: a kill loses at most the batch in flight
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", rows)
        self.stored += len(rows)

    def close(self) -> None:
        self._db.close()


def _decode(kind: str, value: str) -> Response:
    cls = {"LoglikelihoodResponse": LoglikelihoodResponse, "GenerateResponse": GenerateResponse}[kind]
    return cls(**json.loads(value))
