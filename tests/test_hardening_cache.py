"""The response cache never deletes or alters a file that is not ours, waits out locks, moves a
corrupt cache of ours aside, and treats every invalid cached row as a miss (one warning)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evalharness.backends.response_cache as response_cache
from evalharness.backends.response_cache import ResponseCache, decode_row
from evalharness.cli.main import main
from evalharness.core.errors import CacheError
from evalharness.core.requests import GenerateResponse, LoglikelihoodRequest, LoglikelihoodResponse
from tests.conftest import DATA, TINY_LLAMA

RUN = ["run", "--model", str(TINY_LLAMA), "--tasks", "mmlu_anatomy", "--limit", "2",
       "--data-dir", str(DATA), "--device", "cpu", "--no-log-prompts"]
# Holds an exclusive lock on a cache (as a long write by another run would) for argv[2] seconds.
HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA locking_mode=EXCLUSIVE")
db.execute("BEGIN EXCLUSIVE")
db.execute("INSERT OR REPLACE INTO responses VALUES ('holder', 'GenerateResponse', '{}')")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""
# A concurrent run's long write transaction: readers go on, other writers wait.
WRITER = HOLDER.replace('db.execute("PRAGMA locking_mode=EXCLUSIVE")', "").replace("BEGIN EXCLUSIVE", "BEGIN IMMEDIATE")


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _snapshot(path: Path) -> tuple[str, list[str]]:
    """The file's bytes and the names beside it: both must be unchanged after a refusal."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), sorted(p.name for p in path.parent.iterdir())


def _our_cache(path: Path, rows: int = 0) -> None:
    cache = ResponseCache(path, {"m": 1})
    requests = [LoglikelihoodRequest(f"context {i} " * 20, " x") for i in range(rows)]
    cache.put_many((k, LoglikelihoodResponse(-1.5, True, 1)) for k in cache.keys(requests))
    cache.close()


def _corrupt_pages(path: Path, first_page: int) -> None:
    """Overwrite every page from ``first_page`` (1-based) on, keeping the header intact."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[(first_page - 1) * page :] = b"\xa5" * (len(data) - (first_page - 1) * page)
    path.write_bytes(bytes(data))


def _other_app_db(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    db.execute("INSERT INTO notes (body) VALUES ('my data')")
    db.commit()
    db.close()


def _lookalike_db(path: Path) -> None:
    """Another app's database that happens to have a 'responses' table besides its own."""
    _other_app_db(path)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL)")
    db.commit()
    db.close()


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_text("notes\n"), "not a SQLite database"),
    (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\x00" * 10), "not a SQLite database"),
    (_other_app_db, "another application"),
    (_lookalike_db, "another application"),
], ids=["text", "short-sqlite-magic", "other-sqlite", "lookalike-sqlite"])
def test_a_file_that_is_not_ours_is_refused_untouched(tmp_path, capsys, make, words):
    target = tmp_path / "notes.txt"
    make(target)
    before = _snapshot(target)
    code, err = _cli([*RUN, "--cache", str(target), "--output", str(tmp_path / "out")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("evalharness: error: --cache") and words in err
    assert _snapshot(target) == before  # same bytes, no -wal/-shm created beside it
    with pytest.raises(CacheError):  # the Python API refuses it too
        ResponseCache(target, {})
    assert _snapshot(target) == before


def test_a_locked_cache_is_waited_on_then_refused_never_rebuilt(tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache.sqlite"
    _our_cache(cache, rows=3)
    monkeypatch.setattr(response_cache, "LOCK_TIMEOUT_S", 2.0)
    monkeypatch.setattr(response_cache, "LOCK_POLL_S", 0.3)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(cache), "8"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with caplog.at_level(logging.WARNING), pytest.raises(CacheError, match="locked by another process"):
            ResponseCache(cache, {"m": 1})
        assert any("waiting for lock on" in r.getMessage() for r in caplog.records)
    finally:
        holder.wait(timeout=30)
    assert holder.returncode == 0
    with sqlite3.connect(cache) as db:  # the other process's work and ours are both still there
        assert db.execute("SELECT count(*) FROM responses").fetchone()[0] == 4
    assert sorted(p.name for p in tmp_path.iterdir() if "corrupt" in p.name) == []


def test_a_lock_released_in_time_is_simply_waited_for(tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache.sqlite"
    _our_cache(cache)
    monkeypatch.setattr(response_cache, "LOCK_POLL_S", 0.2)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(cache), "1"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    with caplog.at_level(logging.WARNING):
        opened = ResponseCache(cache, {"m": 1})
    holder.wait(timeout=30)
    opened.close()
    assert any("waiting for lock on" in r.getMessage() for r in caplog.records)


def test_a_lock_held_too_long_mid_run_costs_only_the_cache(tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache.sqlite"
    _our_cache(cache)
    monkeypatch.setattr(response_cache, "LOCK_TIMEOUT_S", 1.0)
    opened = ResponseCache(cache, {"m": 1})
    holder = subprocess.Popen([sys.executable, "-c", WRITER, str(cache), "4"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        request = LoglikelihoodRequest("a", " b")
        with caplog.at_level(logging.WARNING):
            opened.put_many([(opened.keys([request])[0], LoglikelihoodResponse(-1.0, True, 1))])
        assert opened.stored == 0
        assert any("continuing without it" in r.getMessage() for r in caplog.records)
    finally:
        holder.wait(timeout=30)
        opened.close()


def test_a_corrupt_cache_of_ours_is_moved_aside_not_deleted(tmp_path, caplog):
    cache = tmp_path / "cache.sqlite"
    _our_cache(cache, rows=200)
    _corrupt_pages(cache, first_page=2)
    corrupt_bytes = cache.read_bytes()
    with caplog.at_level(logging.WARNING):
        fresh = ResponseCache(cache, {"m": 1})
    (aside,) = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))]
    assert aside.read_bytes() == corrupt_bytes
    assert any(str(aside) in r.getMessage() for r in caplog.records)
    request = LoglikelihoodRequest("a", " b")
    fresh.put_many([(fresh.keys([request])[0], LoglikelihoodResponse(-1.0, False, 1))])
    assert len(fresh.get_many(fresh.keys([request]))) == 1
    fresh.close()


def test_our_marker_with_another_schema_is_moved_aside(tmp_path, caplog):
    cache = tmp_path / "cache.sqlite"
    _our_cache(cache)
    db = sqlite3.connect(cache)
    db.execute("DROP TABLE responses")
    db.execute("CREATE TABLE responses (k TEXT)")
    db.commit()
    db.close()
    with caplog.at_level(logging.WARNING):
        ResponseCache(cache, {"m": 1}).close()
    assert any("corrupt" in r.getMessage() and "moved it to" in r.getMessage() for r in caplog.records)
    (aside,) = tmp_path.glob("cache.sqlite.corrupt-*")
    with sqlite3.connect(aside) as db:  # kept as it was, for inspection
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("responses",)]


def test_an_unmarked_cache_from_an_older_version_is_adopted(tmp_path):
    cache = tmp_path / "old.sqlite"
    with sqlite3.connect(cache) as db:
        db.execute(response_cache.SCHEMA)
        db.execute("INSERT INTO responses VALUES ('k', 'GenerateResponse', ?)",
                   (json.dumps(dataclasses.asdict(GenerateResponse("hi", 1, "eos"))),))
    opened = ResponseCache(cache, {})
    assert opened.get_many(["k"]) == {"k": GenerateResponse("hi", 1, "eos")}
    opened.close()
    assert int.from_bytes(cache.read_bytes()[68:72], "big") == response_cache.APPLICATION_ID


def test_damage_found_mid_run_costs_only_the_cache(tmp_path, caplog):
    cache = tmp_path / "cache.sqlite"
    _our_cache(cache, rows=300)
    opened = ResponseCache(cache, {"m": 1})
    _corrupt_pages(cache, first_page=3)  # under the open connection, as a failing disk would
    requests = [LoglikelihoodRequest(f"context {i} " * 20, " x") for i in range(300)]
    with caplog.at_level(logging.WARNING):
        found = opened.get_many(opened.keys(requests))
        opened.put_many([(opened.keys(requests)[0], LoglikelihoodResponse(-1.0, True, 1))])
    opened.close()
    assert len(found) < 300
    assert any("continuing without it" in r.getMessage() for r in caplog.records)


def test_ill_typed_cached_rows_are_recomputed_with_one_warning(tmp_path, capsys, caplog):
    cache, first, second = tmp_path / "cache.sqlite", tmp_path / "first", tmp_path / "second"
    assert _cli([*RUN, "--cache", str(cache), "--output", str(first)], capsys)[0] == 0
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE responses SET value = json_set(value, '$.logprob', 'oops')")
    with caplog.at_level(logging.WARNING):
        assert _cli([*RUN, "--cache", str(cache), "--output", str(second)], capsys)[0] == 0
    warnings = [r.getMessage() for r in caplog.records if "invalid rows" in r.getMessage()]
    assert len(warnings) == 1
    a, b = (json.loads((d / "results.json").read_text()) for d in (first, second))
    assert a["tasks"] == b["tasks"]
    assert b["cache"]["hits"] == 0 and b["cache"]["stored"] == 8  # 2 questions x 4 choices


# -- property-based: whatever a row holds, decoding gives a well-typed response or a miss ----

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["logprob", "is_greedy", "num_tokens", "truncated", "truncated_document", "text", "finish_reason"]
ROW_OBJECT = st.dictionaries(st.sampled_from(FIELDS), JSON | st.floats(allow_nan=True), max_size=7)


def _well_typed(response: object) -> bool:
    if isinstance(response, LoglikelihoodResponse):
        return (isinstance(response.logprob, float) and not math.isnan(response.logprob)
                and response.logprob != math.inf and isinstance(response.is_greedy, bool)
                and type(response.num_tokens) is int and response.num_tokens >= 1)
    assert isinstance(response, GenerateResponse)
    return (isinstance(response.text, str) and type(response.num_tokens) is int and response.num_tokens >= 0
            and response.finish_reason in ("stop", "eos", "length", ""))


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["LoglikelihoodResponse", "GenerateResponse", "Other", ""]),
       value=st.one_of(ROW_OBJECT.map(json.dumps), JSON.map(json.dumps), st.text(max_size=20)))
def test_any_cached_row_decodes_to_a_well_typed_response_or_a_miss(kind, value):
    decoded = decode_row(kind, value)
    assert decoded is None or _well_typed(decoded)


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    st.builds(LoglikelihoodResponse, st.floats(max_value=0, allow_nan=False), st.booleans(),
              st.integers(1, 10_000), st.booleans(), st.booleans()),
    st.builds(GenerateResponse, st.text(), st.integers(0, 10_000), st.sampled_from(["stop", "eos", "length", ""]),
              st.booleans(), st.booleans()),
))
def test_every_valid_response_round_trips(response):
    stored = json.dumps(dataclasses.asdict(response))
    assert decode_row(type(response).__name__, stored) == response
