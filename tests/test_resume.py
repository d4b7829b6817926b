"""Kill -9 at any moment, run the same command again: identical results, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DATA, REPO, TINY_LLAMA, run_cli

# Generation at batch size 1: one cached row per batch, each batch a fraction of a second.
COMMAND = ["run", "--model", str(TINY_LLAMA), "--tasks", "gsm8k,mmlu_anatomy", "--limit", "10",
           "--data-dir", str(DATA), "--device", "cpu", "--batch-size", "1", "--gen-kwargs", "max_new_tokens=24"]
TOTAL_ROWS = 10 + 40  # 10 generations + 40 log-likelihoods


def _rows(cache: Path) -> int:
    if not cache.exists():
        return 0
    try:
        with sqlite3.connect(cache, timeout=5) as db:
            return db.execute("SELECT count(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _comparable(out: Path) -> tuple[list[dict], dict]:
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    results = json.loads((out / "results.json").read_text())
    return samples, results["tasks"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    proc = run_cli(*COMMAND, "--output", str(out), "--no-cache")
    assert proc.returncode == 0, proc.stderr
    return _comparable(out)


def _assert_same(reference, out: Path) -> None:
    ref_samples, ref_tasks = reference
    samples, tasks = _comparable(out)
    assert len(samples) == len(ref_samples)
    for got, want in zip(samples, ref_samples, strict=False):
        assert (got["subtask"], got["doc_id"], got["prediction"], got["metrics"]) == (
            want["subtask"], want["doc_id"], want["prediction"], want["metrics"])
        if isinstance(want["output"], dict):  # log-likelihoods within 1e-5
            assert all(abs(got["output"][k] - v) <= 1e-5 for k, v in want["output"].items())
        else:
            assert got["output"] == want["output"]
    assert tasks == ref_tasks


@pytest.mark.parametrize("kill_after_rows", [1, 25, TOTAL_ROWS], ids=["early", "mid", "scoring"])
def test_kill_and_resume(tmp_path, reference, kill_after_rows):
    cache, out = tmp_path / "cache.sqlite", tmp_path / "out"
    args = [sys.executable, "-m", "evalharness", *COMMAND, "--output", str(out), "--cache", str(cache)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _rows(cache) < kill_after_rows and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored_before = _rows(cache)
    assert stored_before >= min(kill_after_rows, TOTAL_ROWS) or proc.returncode == 0
    assert not (out / "results.json").exists() or stored_before == TOTAL_ROWS

    again = run_cli(*COMMAND, "--output", str(out), "--cache", str(cache))
    assert again.returncode == 0, again.stderr
    _assert_same(reference, out)
    report = json.loads((out / "results.json").read_text())["cache"]
    assert report["hits"] >= stored_before - 1  # at most the batch in flight is lost
    assert report["stored"] == TOTAL_ROWS - report["hits"]
    assert _rows(cache) == TOTAL_ROWS


def test_concurrent_runs_share_one_cache(tmp_path, reference):
    cache = tmp_path / "shared.sqlite"
    env = {**os.environ, "EVALHARNESS_NO_PROGRESS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "evalharness", *COMMAND, "--output", str(tmp_path / f"o{i}"),
                          "--cache", str(cache)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    for i in range(2):
        _assert_same(reference, tmp_path / f"o{i}")
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert _rows(cache) == TOTAL_ROWS


def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, reference):
    from evalharness.backends.response_cache import ResponseCache

    cache, out = tmp_path / "cache.sqlite", tmp_path / "out"
    ResponseCache(cache, {}).close()  # a cache of ours (a file that is not ours is refused)
    header = cache.read_bytes()[:100]
    cache.write_bytes(header + b"this is not a database" * 100)
    proc = run_cli(*COMMAND, "--output", str(out), "--cache", str(cache))
    assert proc.returncode == 0, proc.stderr
    assert "corrupt" in proc.stderr and "rebuilding" in proc.stderr
    assert len(list(tmp_path.glob("cache.sqlite.corrupt-*"))) == 1  # moved aside, not deleted
    _assert_same(reference, out)
