"""results.json commits samples.jsonl: a writer killed between the two renames is detected,
its temporary files are cleaned by the next run, and --output is checked before any work."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest

from evalharness.cli.main import main
from evalharness.core.errors import DataError, EvalHarnessError
from evalharness.run.results_files import check_output_dir, verify_samples, write_run
from tests.conftest import DATA, REPO, TINY_LLAMA

# Writes a run, then one more whose writer is SIGKILLed between its two renames (samples.jsonl
# renamed, results.json's temporary file written but not yet renamed).
KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from evalharness.run import results_files
out = Path(sys.argv[1])
results_files.write_run(out, {"run": "first"}, [{"doc": 1}])
real_replace, calls = os.replace, []
def die_before_second_rename(src, dst):
    calls.append(dst)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
results_files.os.replace = die_before_second_rename
results_files.write_run(out, {"run": "second"}, [{"doc": 2}])
"""


def test_results_json_carries_the_samples_hash(tmp_path):
    write_run(tmp_path, {"run": "a"}, [{"doc": 1}, {"doc": 2}])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["samples_sha256"] == hashlib.sha256((tmp_path / "samples.jsonl").read_bytes()).hexdigest()
    assert verify_samples(tmp_path) is True


def test_a_writer_killed_between_the_renames_is_detected_and_cleaned_up(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], cwd=REPO, timeout=120)
    assert proc.returncode == -9
    assert json.loads((tmp_path / "results.json").read_text())["run"] == "first"
    assert json.loads((tmp_path / "samples.jsonl").read_text()) == {"doc": 2}  # the mismatch
    assert list(tmp_path.glob(".results.json.*.tmp"))  # what the kill left behind
    with pytest.raises(DataError, match="does not belong to"):
        verify_samples(tmp_path)

    write_run(tmp_path, {"run": "third"}, [{"doc": 3}])  # the rerun
    assert verify_samples(tmp_path) is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "samples.jsonl"]


def test_a_failed_second_rename_leaves_a_detectable_pair(tmp_path, monkeypatch):
    write_run(tmp_path, {"run": "first"}, [{"doc": 1}])
    real_replace, calls = __import__("os").replace, []

    def replace_once(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) > 1:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr("evalharness.run.results_files.os.replace", replace_once)
    with pytest.raises(OSError):
        write_run(tmp_path, {"run": "second"}, [{"doc": 2}])
    with pytest.raises(DataError):
        verify_samples(tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))


def test_results_written_before_the_hash_existed_are_not_rejected(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 1}))
    (tmp_path / "samples.jsonl").write_text("{}\n")
    assert verify_samples(tmp_path) is False


def test_missing_or_broken_pair_is_a_one_line_error(tmp_path):
    write_run(tmp_path, {"run": "a"}, [{"doc": 1}])
    (tmp_path / "samples.jsonl").unlink()
    with pytest.raises(DataError, match="samples.jsonl"):
        verify_samples(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(DataError, match="results.json"):
        verify_samples(tmp_path)


@pytest.mark.parametrize("below, words", [("", "existing file"), ("sub", "is a file")], ids=["file", "under-a-file"])
def test_check_output_dir_refuses(tmp_path, below, words):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(EvalHarnessError, match=words):
        check_output_dir(tmp_path / "taken" / below if below else tmp_path / "taken")
    with pytest.raises(EvalHarnessError, match="--output ''"):
        check_output_dir("")


def test_check_output_dir_accepts_a_creatable_path(tmp_path):
    check_output_dir(tmp_path / "a" / "b")
    check_output_dir(None)
    assert not (tmp_path / "a").exists()  # checking creates nothing


def test_output_is_checked_before_the_model_loads(tmp_path, capsys):
    taken = tmp_path / "results.txt"
    taken.write_text("precious")
    started = time.monotonic()
    code = main(["run", "--model", str(TINY_LLAMA), "--tasks", "mmlu", "--data-dir", str(DATA),
                 "--no-cache", "--output", str(taken)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--output" in err and str(taken) in err
    assert time.monotonic() - started < 5  # no plans for 14k questions, no model load
    assert taken.read_text() == "precious"
