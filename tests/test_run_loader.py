"""evalharness.reporting.runs: the one loader of results directories, on a real run and broken copies of it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from evalharness.core.errors import DataError
from evalharness.reporting.runs import LoadedRun, load_run, metric_higher_is_better
from tests.run_files import (
    GOLDEN,
    acc,
    copy_golden,
    edit_first_sample,
    edit_results,
    read_samples,
    replace_first_sample,
    seal,
    write_results,
)


def test_loads_a_real_run() -> None:
    run = load_run(GOLDEN)
    assert isinstance(run, LoadedRun) and run.path == GOLDEN
    assert run.results_file == GOLDEN / "results.json" and run.samples_file == GOLDEN / "samples.jsonl"
    assert run.samples is not None and len(run.samples) == 114 == run.results["tasks"]["mmlu"]["n"]
    assert run.samples[0]["subtask"] == "mmlu_abstract_algebra" and run.samples[0]["doc_id"] == 0
    assert run.model_name == "tiny-random-llama2" and run.limit == 2 and run.requested == ["mmlu"]
    assert set((run.task("mmlu") or {})["subtasks"]) == {s["subtask"] for s in run.samples}
    assert run.task("gsm8k") is None
    assert load_run(GOLDEN / "results.json").path == GOLDEN  # the results file itself also works


def test_is_frozen() -> None:
    run = load_run(GOLDEN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(run, "samples", None)  # noqa: B010 - the assignment a frozen dataclass refuses


def test_without_samples(tmp_path: Path) -> None:
    folder = copy_golden(tmp_path / "run")
    (folder / "samples.jsonl").unlink()
    assert load_run(folder).samples is None


def test_null_means_not_computed(tmp_path: Path) -> None:
    folder = edit_results(copy_golden(tmp_path / "run"), lambda r: acc(r).update(value=None, stderr=None))
    assert load_run(folder).results["tasks"]["mmlu"]["metrics"]["acc"]["value"] is None


def test_samples_sha256(tmp_path: Path) -> None:
    folder = seal(copy_golden(tmp_path / "run"))
    assert load_run(folder).samples is not None
    edit_first_sample(folder, lambda s: s.update(prediction="C"))  # a later run's samples.jsonl
    with pytest.raises(DataError, match="results.json and samples.jsonl come from different runs") as error:
        load_run(folder)
    assert str(folder / "samples.jsonl") in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(("change", "where", "says"), [
    (lambda f: write_results(f, {"schema_version": 1, "tasks": {}, "config": {"tasks": "mmlu"}}), "results.json",
     "config.tasks"),
    (lambda f: write_results(f, {"schema_version": 1, "tasks": {"mmlu": []}}), "results.json", "field tasks.mmlu is"),
    (lambda f: edit_results(f, lambda r: r["tasks"]["mmlu"].update(metrics=[])), "results.json",
     "tasks.mmlu.metrics is a list"),
    (lambda f: edit_results(f, lambda r: r["tasks"]["mmlu"]["subtasks"].update(mmlu_anatomy={"acc": {"n": 2}})),
     "results.json", "tasks.mmlu.subtasks.mmlu_anatomy.acc has no value"),
    (lambda f: edit_results(f, lambda r: acc(r).update(value=[0.5])), "results.json",
     "tasks.mmlu.metrics.acc.value is [0.5], not a number"),
    (lambda f: edit_results(f, lambda r: acc(r).update(value=float("-inf"))), "results.json", "-Infinity"),
    (lambda f: edit_results(f, lambda r: acc(r).update(n="many")), "results.json", "acc.n"),
    (lambda f: edit_results(f, lambda r: r["tasks"]["mmlu"].update(num_fewshot="5")), "results.json", "num_fewshot"),
    (lambda f: edit_results(f, lambda r: r["config"].update(limit="2")), "results.json", "config.limit"),
    (lambda f: (f / "results.json").write_bytes(b'{\n  "schema_version": 1,\n  "tasks": {"caf\xe9": {}}\n}'),
     "results.json, line 3", "not UTF-8"),
    (lambda f: (f / "results.json").write_text('{\n  "schema_version": 1,\n  "tasks": {,}\n}'),
     "results.json, line 3", "not valid JSON"),
    (lambda f: edit_first_sample(f, lambda s: s.update(prompt_hash=None)), "samples.jsonl, line 1",
     "field prompt_hash is None, not text"),
    (lambda f: edit_first_sample(f, lambda s: s.update(doc_id=1.5)), "samples.jsonl, line 1", "doc_id"),
    (lambda f: edit_first_sample(f, lambda s: s.update(subtask=7)), "samples.jsonl, line 1", "subtask"),
    (lambda f: replace_first_sample(f, "a string"), "samples.jsonl, line 1", "a JSON string, not a sample object"),
    (lambda f: (f / "samples.jsonl").write_text((f / "samples.jsonl").read_text().replace("\n", "\n\n", 1)),
     "samples.jsonl, line 2", "blank line"),
])
def test_each_problem_is_one_line_naming_file_and_field(tmp_path: Path, change, where: str, says: str) -> None:
    folder = copy_golden(tmp_path / "run")
    change(folder)
    with pytest.raises(DataError) as error:
        load_run(folder)
    message = str(error.value)
    assert "\n" not in message and f"{folder}/{where}" in message and says in message, message
    assert error.value.exit_code == 2


def test_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no results.json"):
        load_run(tmp_path / "nowhere")


def test_metric_direction() -> None:
    assert metric_higher_is_better({"value": 0.1, "higher_is_better": False}, "acc") is False
    assert metric_higher_is_better({"value": 0.1, "higher_is_better": True}, "toxic_pooled") is True
    # files written before the writer recorded it: the old naming rule
    assert metric_higher_is_better({"value": 0.1}, "toxic_mean_of_groups") is False
    assert metric_higher_is_better(None, "acc") is True


def test_samples_are_kept_as_written() -> None:
    lines = (GOLDEN / "samples.jsonl").read_text("utf-8").splitlines()
    assert list(load_run(GOLDEN).samples or ()) == [json.loads(line) for line in lines] == read_samples(GOLDEN)
