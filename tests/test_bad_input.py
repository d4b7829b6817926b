"""Bad input: one line naming the culprit, a non-zero exit, and no traceback."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import DATA, TINY_LLAMA, run_cli


def _assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("evalharness: error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_unknown_task_suggests_close_names():
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "mmlu_anatomyy", "--data-dir", str(DATA))
    _assert_one_line_error(proc, "mmlu_anatomyy", "did you mean", "mmlu_anatomy")


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nowhere"
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "mmlu", "--data-dir", str(missing))
    _assert_one_line_error(proc, "--data-dir", str(missing))


def test_missing_data_dir_from_environment(tmp_path):
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "mmlu",
                   env={"EVALHARNESS_DATA_DIR": str(tmp_path / "gone")})
    _assert_one_line_error(proc, "EVALHARNESS_DATA_DIR")


def test_csv_row_with_a_missing_column(tmp_path):
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    shutil.copytree(DATA / "mmlu" / "dev", tmp_path / "mmlu" / "dev")
    good = (DATA / "mmlu" / "test" / "anatomy_test.csv").read_text().splitlines(keepends=True)
    broken = good[:2] + ["What is missing here?,A,B,C\n"] + good[2:]
    (tmp_path / "mmlu" / "test" / "anatomy_test.csv").write_text("".join(broken))
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "mmlu_anatomy", "--data-dir", str(tmp_path))
    _assert_one_line_error(proc, "anatomy_test.csv", "line 3", "expected 6 columns, got 4")


def test_missing_data_file(tmp_path):
    (tmp_path / "mmlu").mkdir()
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "mmlu_anatomy", "--data-dir", str(tmp_path))
    _assert_one_line_error(proc, "anatomy_test.csv", "missing")


@pytest.mark.parametrize("model", ["/no/such/model", "./not-here"])
def test_model_path_that_does_not_exist(model):
    proc = run_cli("run", "--model", model, "--tasks", "mmlu_anatomy", "--data-dir", str(DATA), "--limit", "1")
    _assert_one_line_error(proc, model, "does not exist")


def test_model_folder_without_weights(tmp_path):
    shutil.copy(TINY_LLAMA / "config.json", tmp_path / "config.json")
    proc = run_cli("run", "--model", str(tmp_path), "--tasks", "mmlu_anatomy", "--data-dir", str(DATA), "--limit", "1")
    _assert_one_line_error(proc, "no weights")


def test_invalid_cli_value():
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "mmlu", "--limit", "0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--limit" in proc.stderr


def test_template_with_an_undefined_variable(tmp_path):
    (tmp_path / "mmlu").mkdir()
    (tmp_path / "mmlu" / "default.jinja").write_text("{{ question }}\nA. {{ choices[0] }}\n{{ questoin }}\nAnswer:\n")
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "mmlu_anatomy", "--data-dir", str(DATA),
                   "--prompt-dir", str(tmp_path), "--limit", "1")
    _assert_one_line_error(proc, "mmlu/default.jinja", "line 3", "'questoin' is undefined")


def test_unreadable_data_file(tmp_path):
    shutil.copytree(DATA / "mmlu" / "dev", tmp_path / "mmlu" / "dev")
    (tmp_path / "mmlu" / "test").mkdir()
    (tmp_path / "mmlu" / "test" / "anatomy_test.csv").write_bytes(b"\xff\xfe\xfa not utf-8\n")
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "mmlu_anatomy", "--data-dir", str(tmp_path))
    _assert_one_line_error(proc, "anatomy_test.csv", "unreadable")


def test_unknown_task_option():
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "gsm8k", "--data-dir", str(DATA), "--task-args", "sample=3")
    _assert_one_line_error(proc, "sample", "did you mean: samples")


def test_debug_shows_the_traceback():
    proc = run_cli("--debug", "run", "--model", str(TINY_LLAMA), "--tasks", "nope", "--data-dir", str(DATA))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_finished_work_survives_a_late_error(tmp_path):
    """A failure after scoring started never deletes earlier results: outputs are atomic renames."""
    out = tmp_path / "out"
    first = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "mmlu_anatomy", "--limit", "2",
                    "--data-dir", str(DATA), "--output", str(out))
    assert first.returncode == 0
    before = (out / "results.json").read_text()
    bad = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "mmlu_anatomyy", "--data-dir", str(DATA), "--output", str(out))
    assert bad.returncode != 0
    assert (out / "results.json").read_text() == before
    assert not list(out.glob(".*.tmp"))
