"""A newcomer's view: `evalharness tasks` and `evalharness run --dry-run` (real data and tokenizer)."""

from __future__ import annotations

import json
import shutil

from tests.conftest import DATA, TINY_LLAMA, run_cli


def test_tasks_lists_tasks_groups_subtasks_and_data():
    listing = json.loads(run_cli("tasks", "--json", "--data-dir", str(DATA)).stdout)
    tasks = {t["name"]: t for t in listing["tasks"]}
    assert len(tasks["mmlu"]["subtasks"]) == 57 and tasks["mmlu"]["shots"] == 5
    assert tasks["mmlu"]["shape"] == "MultipleChoice" and tasks["mmlu"]["data"] == "local"
    assert any("Table 20" in c for c in tasks["mmlu"]["card"])
    assert tasks["gsm8k"]["metrics"] == ["exact_match_strict", "exact_match_flexible"]
    assert listing["groups"]["world_knowledge"] == ["nq_open", "triviaqa"] and "mmlu" in listing["groups"]["llama2_card"]
    text = run_cli("tasks", "mmlu_virology", "--data-dir", str(DATA)).stdout
    assert "57; each runs alone" in text and "mmlu_virology" in text


def test_tasks_reports_missing_data_and_unknown_names(tmp_path):
    listing = json.loads(run_cli("tasks", "--json", "--data-dir", str(tmp_path)).stdout)
    mmlu = next(t for t in listing["tasks"] if t["name"] == "mmlu")
    assert mmlu["data"].startswith("missing: ") and "abstract_algebra_test.csv" in mmlu["data"]
    wrong = run_cli("tasks", "mmlu_virolgy")
    assert wrong.returncode == 2 and "did you mean" in wrong.stderr


def test_dry_run_needs_no_weights_and_counts_what_a_run_truncates(tmp_path):
    """Only the tokenizer and config are read: a folder without weights plans fine, and the
    truncation count matches what the real run then reports."""
    folder = tmp_path / "no-weights"
    shutil.copytree(TINY_LLAMA, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    common = ["--tasks", "mmlu_anatomy,gsm8k", "--limit", "3", "--data-dir", str(DATA), "--max-length", "400",
              "--device", "cpu", "--no-cache"]
    plan = run_cli("run", "--model", str(folder), "--dry-run", *common)
    assert plan.returncode == 0, plan.stderr
    lines = {line.split()[0]: line.split() for line in plan.stdout.splitlines()[1:3]}
    assert lines["mmlu"][1:4] == ["3", "12", "0"] and lines["gsm8k"][1:4] == ["3", "0", "3"]
    assert "--- first prompt of mmlu ---" in plan.stdout and "about anatomy." in plan.stdout
    real = run_cli("run", "--model", str(TINY_LLAMA), *common, "--gen-kwargs", "max_new_tokens=4",
                   "--output", str(tmp_path / "out"))
    assert real.returncode == 0, real.stderr
    tasks = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"]
    assert int(lines["mmlu"][6]) == tasks["mmlu"]["truncated_documents"] > 0
