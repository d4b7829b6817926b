"""A response cache in SQLite (WAL mode): every computed batch is stored as it completes.

Keys hash the model fingerprint together with the full request, so a re-run — after a crash,
a kill -9 or a deliberate stop — computes only what is missing. Several runs may share one file.

The cache path is a user's file, so it is handled conservatively: our databases carry
``PRAGMA application_id`` = APPLICATION_ID (written before WAL is switched on, so it is in the
file header on disk); any other existing non-empty file is refused untouched. A locked cache is
waited on and then refused, never rebuilt. Only a cache that is ours and corrupt is moved aside
(renamed, never deleted) and started afresh. Every row read back is validated: an ill-typed row
is a cache miss, recomputed, never a score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from evalharness.core.errors import CacheError
from evalharness.core.requests import (
    GenerateResponse,
    LoglikelihoodResponse,
    Request,
    Response,
)

log = logging.getLogger(__name__)

CACHE_ENV = "EVALHARNESS_CACHE"
APPLICATION_ID = 0x45764831  # "EvH1", in the SQLite header at offset 68
USER_VERSION = 1  # our schema version, in the SQLite header at offset 60
SQLITE_MAGIC = b"SQLite format 3\x00"
TABLE = "responses"
COLUMNS = ("key", "kind", "value")
SCHEMA = f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL)"
LOCK_TIMEOUT_S = 60.0  # how long to wait for another process's lock before giving up
LOCK_POLL_S = 2.0  # the first, silent wait; after it we log that we are waiting
# Fingerprint fields that do not change a model's outputs.
NEUTRAL_FIELDS = ("model",)
FINISH_REASONS = ("stop", "eos", "length", "")


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
    if not payload.get("messages"):
        payload.pop("messages", None)  # keys written before chat messages existed stay valid
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def check_cache_path(path: str | os.PathLike[str], origin: str = "response cache") -> Path:
    """Cheap checks of a cache path (``origin``: where it came from, for the message), done
    before any work; returns the expanded path."""
    text = os.fspath(path)
    if not text.strip():
        raise CacheError(f"{origin} '': give a file path, or --no-cache")
    target = Path(text).expanduser()
    if target.is_dir():
        raise CacheError(f"{origin} {text!r} is a directory; give a file path inside it")
    if target.exists():
        mode = target.stat().st_mode
        if not os.access(target, os.R_OK | os.W_OK) or not mode & 0o222:
            raise CacheError(f"{origin} {text!r} is read-only; give a writable file, or --no-cache")
        try:
            _classify(target, origin)  # refuses files that are not ours, without touching them
        except sqlite3.OperationalError:
            pass  # locked: ResponseCache waits for it
    parent = target.parent
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise CacheError(f"{origin} {text!r}: cannot create files in {str(parent)!r}")
    return target


def _classify(path: Path, origin: str = "response cache") -> str:
    """'new', 'ours' or 'legacy' (an unmarked cache written before the marker existed).

    Raises CacheError for anything else, after reading only (never writing) the file."""
    try:
        with path.open("rb") as fh:
            header = fh.read(100)
    except FileNotFoundError:
        return "new"
    except OSError as exc:
        raise CacheError(f"{origin} {str(path)!r}: cannot read it ({exc.strerror})") from None
    if not header:
        return "new"
    if not header.startswith(SQLITE_MAGIC) or len(header) < 100:
        raise CacheError(f"{origin} {str(path)!r} is not an evalharness response cache (not a SQLite "
                         "database); refusing to touch it: choose another path")
    if int.from_bytes(header[68:72], "big") == APPLICATION_ID:
        return "ours"
    if int.from_bytes(header[68:72], "big") == 0 and _is_legacy_cache(path):
        return "legacy"
    raise CacheError(f"{origin} {str(path)!r} is a SQLite database of another application (no "
                     "evalharness marker); refusing to touch it: choose another path")


def _is_legacy_cache(path: Path) -> bool:
    """A read-only look: exactly our table, or our marker still only in the WAL file."""
    try:
        db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=LOCK_POLL_S)
        try:
            if db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
                return True
            tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            columns = tuple(row[1] for row in db.execute(f"PRAGMA table_info({TABLE})"))
        finally:
            db.close()
    except sqlite3.OperationalError as exc:
        if _is_locked(exc):
            raise  # the caller waits for the lock
        return False
    except sqlite3.DatabaseError:
        return False
    return tables == [(TABLE,)] and columns == COLUMNS


def _is_locked(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class ResponseCache:
    def __init__(self, path: str | os.PathLike[str], fingerprint: Mapping[str, Any]) -> None:
        self.path = check_cache_path(path)
        self.model_key = fingerprint_key(fingerprint)
        self.hits = 0
        self.stored = 0
        self.invalid = 0  # rows that failed validation: treated as misses
        self._broken = False  # set when the file fails mid-run: the run goes on without it
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open_waiting()

    def _open_waiting(self) -> sqlite3.Connection:
        """Opens, waiting out another process's lock (logged); a lock never triggers a rebuild."""
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        waited = False
        while True:
            budget = min(LOCK_POLL_S, max(0.0, deadline - time.monotonic()))
            try:
                db = self._open_checked(budget)
                # Later writes wait for concurrent runs' batches as long as the open may.
                db.execute(f"PRAGMA busy_timeout={int(LOCK_TIMEOUT_S * 1000)}")
                return db
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise CacheError(f"response cache {str(self.path)!r}: cannot open it ({exc})") from None
                if time.monotonic() >= deadline:
                    raise CacheError(
                        f"response cache {str(self.path)!r} is locked by another process (waited "
                        f"{LOCK_TIMEOUT_S:g} s); retry later, or use another --cache or --no-cache"
                    ) from None
                if not waited:
                    log.warning("waiting for lock on response cache %s (held by another process, "
                                "up to %g s)", self.path, LOCK_TIMEOUT_S)
                    waited = True

    def _open_checked(self, timeout: float) -> sqlite3.Connection:
        kind = _classify(self.path)
        try:
            return self._connect(kind, timeout)
        except sqlite3.OperationalError:
            raise  # locked, read-only, I/O: the file may be fine, so it is never rebuilt
        except (sqlite3.DatabaseError, _SchemaError) as exc:
            if kind == "new":
                raise CacheError(f"response cache {str(self.path)!r}: cannot create it ({exc})") from None
            self._move_aside(exc)
        return self._connect("new", timeout)

    def _move_aside(self, reason: Exception) -> None:
        """Our cache but unreadable: keep it for inspection under a new name, start afresh."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, f"{aside}{suffix}")
        log.warning("response cache %s is corrupt (%s); moved it to %s and rebuilding it",
                    self.path, reason, aside)

    def _connect(self, kind: str, timeout: float) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            if kind == "new":
                _initialise(db)
            elif kind == "legacy":
                db.execute("BEGIN IMMEDIATE")
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={USER_VERSION}")
                db.execute("COMMIT")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            _check_schema(db)
        except BaseException:
            db.close()
            raise
        return db

    def keys(self, requests: Sequence[Request]) -> list[str]:
        return [request_key(self.model_key, r) for r in requests]

    def get_many(self, keys: Sequence[str]) -> dict[str, Response]:
        found: dict[str, Response] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite caps the number of bound parameters
            if self._broken:
                break
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            try:
                rows = self._db.execute(
                    f"SELECT key, kind, value FROM {TABLE} WHERE key IN ({marks})", chunk
                ).fetchall()
            except sqlite3.Error as exc:
                self._fail("reading", exc)
                break
            for key, kind, value in rows:
                response = decode_row(kind, value)
                if response is None:
                    self._invalid_row(key)
                else:
                    found[key] = response
        self.hits += len(found)
        return found

    def put_many(self, items: Iterable[tuple[str, Response]]) -> None:
        rows = [(key, type(r).__name__, json.dumps(dataclasses.asdict(r))) for key, r in items]
        if not rows or self._broken:
            return
        try:
            with self._db:  # one transaction per batch: a kill loses at most the batch in flight
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?)", rows)
        except sqlite3.Error as exc:
            self._fail("writing", exc)
            return
        self.stored += len(rows)

    def close(self) -> None:
        if self.invalid:
            log.info("response cache %s: %d invalid row(s) were recomputed", self.path, self.invalid)
        self._db.close()

    def _invalid_row(self, key: str) -> None:
        if not self.invalid:  # one warning per run, however many rows
            log.warning("response cache %s holds invalid rows (first: key %s…); recomputing them",
                        self.path, key[:12])
        self.invalid += 1

    def _fail(self, action: str, exc: sqlite3.Error) -> None:
        """Mid-run, a lock held past the timeout or a damaged page costs only the cache: the
        responses are still computed, so the run's results stay right (and it finishes)."""
        hint = "another process held it too long" if _is_locked(exc) else "move the file aside to rebuild it"
        log.warning("response cache %s failed while %s (%s); continuing without it (%s)",
                    self.path, action, exc, hint)
        self._broken = True


class _SchemaError(Exception):
    """Our marker, but not our table: treated as corruption."""


def _initialise(db: sqlite3.Connection) -> None:
    """Marks a new (empty) database as ours, under a write lock so concurrent creators agree."""
    db.execute("BEGIN IMMEDIATE")
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id == 0 and tables == 0:
            # Rollback-journal mode here, so the marker reaches the file header before WAL.
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={USER_VERSION}")
            db.execute(SCHEMA)
        elif app_id != APPLICATION_ID:
            raise CacheError("response cache: another program created this file meanwhile; refusing it")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _check_schema(db: sqlite3.Connection) -> None:
    columns = tuple(row[1] for row in db.execute(f"PRAGMA table_info({TABLE})"))
    if columns != COLUMNS:
        raise _SchemaError(f"table {TABLE!r} has columns {columns or 'none'}, expected {COLUMNS}")
    db.execute(f"SELECT key, kind, value FROM {TABLE} LIMIT 1").fetchall()  # touches a data page


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_logprob(value: Any) -> bool:
    # -inf is a real (if extreme) log-probability; NaN and +inf never are.
    if not (_is_int(value) or isinstance(value, float)):
        return False
    try:
        number = float(value)
    except OverflowError:  # a huge JSON integer
        return False
    return not math.isnan(number) and number != math.inf


_FIELD_CHECKS: dict[str, dict[str, Any]] = {
    "LoglikelihoodResponse": {
        "logprob": _valid_logprob,
        "is_greedy": lambda v: isinstance(v, bool),
        "num_tokens": lambda v: _is_int(v) and v >= 1,
        "truncated": lambda v: isinstance(v, bool),
        "truncated_document": lambda v: isinstance(v, bool),
    },
    "GenerateResponse": {
        "text": lambda v: isinstance(v, str),
        "num_tokens": lambda v: _is_int(v) and v >= 0,
        "finish_reason": lambda v: v in FINISH_REASONS,
        "truncated": lambda v: isinstance(v, bool),
        "truncated_document": lambda v: isinstance(v, bool),
    },
}
_CLASSES: dict[str, type[LoglikelihoodResponse] | type[GenerateResponse]] = {
    "LoglikelihoodResponse": LoglikelihoodResponse,
    "GenerateResponse": GenerateResponse,
}
_REQUIRED = {
    name: {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
    for name, cls in _CLASSES.items()
}


def decode_row(kind: Any, value: Any) -> Response | None:
    """The response a cached row holds, or None when any field is missing, extra or ill-typed."""
    checks = _FIELD_CHECKS.get(kind) if isinstance(kind, str) else None
    if checks is None or not isinstance(value, (str, bytes)):
        return None
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not _REQUIRED[kind] <= data.keys() <= checks.keys():
        return None
    if not all(checks[name](field) for name, field in data.items()):
        return None
    if kind == "LoglikelihoodResponse":
        data["logprob"] = float(data["logprob"])
    return _CLASSES[kind](**data)
