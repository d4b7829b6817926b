"""``python -m evalharness.demo`` (``tox -e demo``), end to end on the tiny model (``--model``).

The real demo model (SmolLM2-135M-Instruct as a GGUF) is covered by test_gguf.py; here the
orchestration: the task list, the results, both reports, and one-line errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evalharness.core.errors import EvalHarnessError
from evalharness.core.task_selection import resolve
from evalharness.demo import DEMO_TASKS, DemoTask, task_selection
from tests.conftest import DATA, REPO, TINY_LLAMA


def test_demo_tasks_are_registered_and_agree_on_their_options() -> None:
    names, options = task_selection(DEMO_TASKS)
    assert len(set(names)) == len(names)
    assert resolve(list(names), options)  # every task exists and takes its options


def test_conflicting_task_options_are_refused() -> None:
    with pytest.raises(EvalHarnessError, match="disagree"):
        task_selection((DemoTask("a", {"judge": "x"}), DemoTask("b", {"judge": "y"})))


def test_demo_writes_results_and_both_reports(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "evalharness.demo", "--model", str(TINY_LLAMA), "--limit", "1",
         "--data-dir", str(DATA), "--output", str(out), "--no-cache"],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("results.json", "report.html", "report.md"):
        assert (out / name).is_file()
        assert str((out / name).resolve()) in proc.stdout  # the paths are printed
    results = json.loads((out / "results.json").read_text("utf-8"))
    assert set(results["tasks"]) == {"mmlu", "gsm8k", "truthfulqa_gen", "truthfulqa_mc2", "toxigen"}
    assert "[3/3] writing the reports" in proc.stderr
    assert "<html" in (out / "report.html").read_text("utf-8").lower()


def test_demo_bad_input_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "evalharness.demo", "--model", str(tmp_path / "nope.gguf"),
         "--data-dir", str(DATA), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [errors[0]] and errors[0].startswith("evalharness demo: error:"), proc.stderr
    assert "does not exist" in errors[0] and "Traceback" not in proc.stderr
