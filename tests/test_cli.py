"""The command line end to end on the real tiny models and the full MMLU subject list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DATA, STORIES, TINY_LLAMA, run_cli

RESULT_FIELDS = {
    "schema_version", "created", "command", "harness", "config", "model", "tasks", "templates",
    "seeds", "data", "libraries", "host", "wall_time_s",
}
SAMPLE_FIELDS = {"task", "subtask", "doc_id", "prompt_hash", "prompt", "output", "prediction", "gold", "metrics"}


def _run_mmlu(model: Path, out: Path, *extra: str) -> tuple[dict, list[dict]]:
    proc = run_cli("run", "--model", str(model), "--tasks", "mmlu", "--limit", "2",
                   "--data-dir", str(DATA), "--output", str(out), "--device", "cpu", *extra)
    assert proc.returncode == 0, proc.stderr
    assert "acc_macro" in proc.stdout and "humanities" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return results, samples


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return _run_mmlu(TINY_LLAMA, tmp_path_factory.mktemp("tiny"))


def test_results_file_has_the_schema(tiny_run):
    results, _ = tiny_run
    assert RESULT_FIELDS <= set(results)
    mmlu = results["tasks"]["mmlu"]
    assert mmlu["n"] == 114 and mmlu["num_fewshot"] == 5 and mmlu["version"]
    assert set(mmlu["metrics"]) == {"acc", "acc_macro"}
    assert {"value", "stderr", "n"} <= set(mmlu["metrics"]["acc"])
    assert set(mmlu["groups"]) == {"humanities", "stem", "social_sciences", "other"}
    assert len(mmlu["subtasks"]) == 57 and mmlu["subtasks"]["mmlu_anatomy"]["acc"]["n"] == 2
    assert results["templates"]["mmlu/default.jinja"]
    assert results["model"]["weights"]["weights_sha256"]
    assert "mmlu/test/anatomy_test.csv" in results["data"]["files"]
    assert results["libraries"]["torch"].startswith("2.")
    assert "--limit" in results["command"]


def test_samples_carry_every_document(tiny_run):
    results, samples = tiny_run
    assert len(samples) == 114
    assert SAMPLE_FIELDS <= set(samples[0])
    assert {s["subtask"] for s in samples} == set(results["tasks"]["mmlu"]["subtasks"])
    first = samples[0]
    assert set(first["output"]) == {"A", "B", "C", "D"}
    assert first["prediction"] == max(first["output"], key=first["output"].get)
    # The micro mean is the mean of the per-document scores.
    acc = sum(s["metrics"]["acc"] for s in samples) / len(samples)
    assert results["tasks"]["mmlu"]["metrics"]["acc"]["value"] == pytest.approx(acc)


def test_stories260k_truncates_every_prompt(tmp_path):
    results, samples = _run_mmlu(STORIES, tmp_path, "--no-log-prompts", "--model-args", "eos_token_id=1")
    mmlu = results["tasks"]["mmlu"]
    assert mmlu["truncated_documents"] == 114  # 5-shot prompts never fit 512 tokens
    assert results["model"]["max_length"] == 512
    assert "prompt" not in samples[0]


def test_tasks_command_lists_mmlu():
    proc = run_cli("tasks")
    assert proc.returncode == 0 and "mmlu" in proc.stdout
