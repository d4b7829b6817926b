"""`evalharness gate` exit codes, table-driven: 0 pass, 1 regression, 2 for every input it cannot read or use.

Each case writes a candidate in tmp_path from the real golden run (tests/golden/mmlu-tiny-limit2),
breaks one thing, and runs the real command line. CI reads exit 1 as "regression", so an input the
gate could not read must never give 0 or 1: it is exit 2 with one line naming the file, field or option.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from evalharness.cli.main import main
from tests.conftest import run_cli
from tests.run_files import (
    GOLDEN,
    acc,
    copy_golden,
    degrade,
    edit_first_sample,
    edit_results,
    read_samples,
    replace_first_sample,
    seal,
    write_results,
    write_samples,
)

Build = Callable[[Path], list[str]]


@dataclass(frozen=True)
class Case:
    name: str
    build: Build  # writes files under tmp_path; returns the gate's arguments
    code: int
    word: str  # in stdout (exit 0/1) or in the one-line error (exit 2)


def against(change: Callable[[Path], object], *extra: str) -> Build:
    """Gate the golden baseline against a copy of it changed by ``change``."""

    def build(tmp: Path) -> list[str]:
        candidate = copy_golden(tmp / "candidate")
        change(candidate)
        return ["--baseline", str(GOLDEN), "--candidate", str(candidate), *extra]

    return build


def options(*extra: str) -> Build:
    return lambda tmp: ["--baseline", str(GOLDEN), "--candidate", str(GOLDEN), *extra]


def results_text(text: bytes) -> Callable[[Path], object]:
    return lambda folder: (folder / "results.json").write_bytes(text)


def samples_line(line: bytes) -> Callable[[Path], object]:
    def change(folder: Path) -> None:
        rest = (folder / "samples.jsonl").read_bytes().split(b"\n", 1)[1]
        (folder / "samples.jsonl").write_bytes(line + b"\n" + rest)

    return change


def acc_field(**fields: object) -> Callable[[Path], object]:
    return lambda folder: edit_results(folder, lambda r: acc(r).update(fields))


def drop_acc_value(folder: Path) -> None:
    edit_results(folder, lambda r: acc(r).pop("value"))


def first_doc_metric(value: object) -> Callable[[Path], object]:
    return lambda folder: edit_first_sample(folder, lambda s: s["metrics"].update(acc=value))


def duplicate_first_sample(folder: Path) -> None:
    samples = read_samples(folder)
    write_samples(folder, [samples[0], *samples])


def unwritable(option: str) -> Build:
    def build(tmp: Path) -> list[str]:
        (tmp / "a-file").write_text("not a directory")
        return ["--baseline", str(GOLDEN), "--candidate", str(GOLDEN), option, str(tmp / "a-file" / "out")]

    return build


def card(change: Callable[[Path], object], *extra: str) -> Build:
    def build(tmp: Path) -> list[str]:
        candidate = copy_golden(tmp / "candidate")
        change(candidate)
        return ["--card", "llama-2-7b", "--candidate", str(candidate), *extra]

    return build


def unchanged(folder: Path) -> None:
    return None


def both_directions(baseline_flag: bool, candidate_flag: bool) -> Build:
    def build(tmp: Path) -> list[str]:
        base = edit_results(copy_golden(tmp / "base"), lambda r: acc(r).update(higher_is_better=baseline_flag))
        cand = degrade(copy_golden(tmp / "cand"))
        edit_results(cand, lambda r: acc(r).update(higher_is_better=candidate_flag))
        return ["--baseline", str(base), "--candidate", str(cand), "--metric", "mmlu:acc"]

    return build


CASES = [
    # controls: the gate still decides when it can read its inputs
    Case("identical runs", against(unchanged), 0, "gate: PASS"),
    Case("samples_sha256 that matches", against(seal), 0, "gate: PASS"),
    Case("every right answer made wrong", against(degrade, "--metric", "mmlu:acc"), 1, "REGRESSION"),
    Case("lower is better (higher_is_better false): a drop improves", both_directions(False, False), 0, "IMPROVED"),
    Case("higher is better (higher_is_better true): a drop regresses", both_directions(True, True), 1, "REGRESSED"),
    # results.json
    Case("results.json is a list", against(lambda f: write_results(f, [1, 2])), 2, "not an object"),
    Case("results.json missing", against(lambda f: (f / "results.json").unlink()), 2, "no results.json"),
    Case("results.json not UTF-8", against(results_text(b'{"schema_version": 1, "x": "\xff"}')), 2, "UTF-8"),
    Case("results.json not JSON", against(results_text(b"{not json")), 2, "not valid JSON"),
    Case("results.json empty", against(results_text(b"")), 2, "not valid JSON"),
    Case("schema_version 2", against(lambda f: edit_results(f, lambda r: r.update(schema_version=2))), 2,
         "schema_version"),
    Case("no tasks mapping", against(lambda f: edit_results(f, lambda r: r.pop("tasks"))), 2, "tasks"),
    Case("tasks is a list", against(lambda f: edit_results(f, lambda r: r.update(tasks=["mmlu"]))), 2, "tasks"),
    Case("config is a list", against(lambda f: edit_results(f, lambda r: r.update(config=[]))), 2, "config"),
    Case("metric without value", against(drop_acc_value), 2, "tasks.mmlu.metrics.acc has no value"),
    Case("value is text", against(acc_field(value="0.25")), 2, "tasks.mmlu.metrics.acc.value"),
    Case("value is true", against(acc_field(value=True)), 2, "not a number"),
    Case("value is NaN", against(acc_field(value=float("nan"))), 2, "NaN"),
    Case("value is Infinity", against(acc_field(value=float("inf"))), 2, "Infinity"),
    Case("stderr is NaN", against(acc_field(stderr=float("nan"))), 2, "NaN"),
    Case("group value is NaN",
         against(lambda f: edit_results(f, lambda r: r["tasks"]["mmlu"]["groups"]["stem"]["acc"].update(
             value=float("nan")))), 2, "groups.stem.acc"),
    Case("metric entry is a number", against(lambda f: edit_results(f, lambda r: r["tasks"]["mmlu"]["metrics"].update(
        acc=0.25))), 2, "not an object"),
    Case("higher_is_better is text", against(acc_field(higher_is_better="yes")), 2, "higher_is_better"),
    Case("higher_is_better differs between the runs", both_directions(True, False), 2, "higher_is_better differs"),
    Case("gated metric not computed in the candidate", against(acc_field(value=None), "--metric", "mmlu:acc"), 2,
         "not computed"),
    Case("metric not computed in the candidate only", against(acc_field(value=None)), 2, "not computed"),
    # samples.jsonl
    Case("sample without prompt_hash", against(lambda f: edit_first_sample(f, lambda s: s.pop("prompt_hash"))), 2,
         "line 1: field prompt_hash"),
    Case("sample without doc_id", against(lambda f: edit_first_sample(f, lambda s: s.pop("doc_id"))), 2, "doc_id"),
    Case("sample without task", against(lambda f: edit_first_sample(f, lambda s: s.pop("task"))), 2, "task"),
    Case("sample is a list", against(lambda f: replace_first_sample(f, [1])), 2, "not a sample object"),
    Case("sample line not JSON", against(samples_line(b"{truncated")), 2, "line 1: not valid JSON"),
    Case("sample line not UTF-8", against(samples_line(b'{"task": "\xfe"}')), 2, "line 1: not UTF-8"),
    Case("sample metrics is a list", against(lambda f: edit_first_sample(f, lambda s: s.update(metrics=[1]))), 2,
         "metrics"),
    Case("per-document metric NaN", against(first_doc_metric(float("nan"))), 2, "metrics.acc is nan"),
    Case("per-document metric null", against(first_doc_metric(None)), 2, "metrics.acc is None"),
    Case("per-document metric text", against(first_doc_metric("1")), 2, "not a finite number"),
    Case("document logged twice", against(duplicate_first_sample), 2, "logged twice"),
    Case("samples_sha256 of another run", against(lambda f: seal(f, "0" * 64)), 2, "come from different runs"),
    Case("samples_sha256 not a sha256", against(lambda f: seal(f, "abc")), 2, "samples_sha256"),
    Case("--exact with a sample without prompt_hash",
         against(lambda f: edit_first_sample(f, lambda s: s.pop("prompt_hash")), "--exact"), 2, "prompt_hash"),
    # outputs
    Case("--summary not writable", unwritable("--summary"), 2, "--summary"),
    Case("--json not writable", unwritable("--json"), 2, "--json"),
    # options
    Case("--alpha 0", options("--alpha", "0"), 2, "--alpha"),
    Case("--alpha 1", options("--alpha", "1"), 2, "--alpha"),
    Case("--alpha -1", options("--alpha", "-1"), 2, "--alpha"),
    Case("--alpha nan", options("--alpha", "nan"), 2, "--alpha"),
    Case("--alpha text", options("--alpha", "five"), 2, "--alpha"),
    Case("--max-drop nan", options("--max-drop", "nan"), 2, "--max-drop"),
    Case("--max-drop inf", options("--max-drop", "inf"), 2, "--max-drop"),
    Case("--max-drop -1", options("--max-drop", "-1"), 2, "--max-drop"),
    Case("--tolerance nan", card(unchanged, "--tolerance", "nan"), 2, "--tolerance"),
    Case("--tolerance -2", card(unchanged, "--tolerance", "-2"), 2, "--tolerance"),
    Case("--tolerance inf", card(unchanged, "--tolerance", "inf"), 2, "--tolerance"),
    Case("--card with a NaN value", card(acc_field(value=float("nan"))), 2, "NaN"),
    Case("--card with a value that is text", card(acc_field(value="high")), 2, "not a number"),
    Case("neither --baseline nor --card", lambda tmp: ["--candidate", str(GOLDEN)], 2, "--baseline"),
]


def run_gate(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["gate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_gate_exit_code(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_gate(case.build(tmp_path), capsys)
    assert code == case.code, out + err
    if case.code == 2:
        assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
        assert err.startswith("evalharness: error: ") and case.word in err, err
        assert "gate: PASS" not in out and "REGRESSION" not in out
    else:
        assert case.word in out, out


def test_every_input_error_is_exit_2_in_a_real_process(tmp_path: Path) -> None:
    """The same as CI sees it: a subprocess, its exit status and its stderr."""
    candidate = write_results(copy_golden(tmp_path / "candidate"), [])
    proc = run_cli("gate", "--baseline", str(GOLDEN), "--candidate", str(candidate))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"evalharness: error: {candidate / 'results.json'}: not an evalharness"
                                                " results file (a JSON list, not an object)"]


def test_failed_summary_leaves_no_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unwritable --summary is exit 2 before anything is printed as a verdict."""
    (tmp_path / "a-file").write_text("x")
    verdict = tmp_path / "verdict.json"
    code, out, _ = run_gate(["--baseline", str(GOLDEN), "--candidate", str(GOLDEN), "--json", str(verdict),
                             "--summary", str(tmp_path / "a-file" / "summary.md")], capsys)
    assert code == 2 and out == "" and not verdict.exists()


def test_toxic_fallback_for_files_without_a_direction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Older results.json files carry no higher_is_better: names containing "toxic" improve downwards."""

    def rename(folder: Path) -> None:
        edit_results(folder, lambda r: r["tasks"]["mmlu"]["metrics"].update(toxic=r["tasks"]["mmlu"]["metrics"]["acc"]))
        samples = read_samples(folder)
        for s in samples:
            s["metrics"]["toxic"] = s["metrics"]["acc"]
        write_samples(folder, samples)

    base = copy_golden(tmp_path / "base")
    rename(base)
    cand = degrade(copy_golden(tmp_path / "cand"))
    rename(cand)
    code, out, err = run_gate(["--baseline", str(base), "--candidate", str(cand), "--metric", "mmlu:toxic"], capsys)
    assert code == 0 and "IMPROVED" in out, out + err
    verdict = tmp_path / "v.json"
    run_gate(["--baseline", str(base), "--candidate", str(cand), "--metric", "mmlu:toxic", "--json", str(verdict)],
             capsys)
    (row,) = json.loads(verdict.read_text())["verdicts"]
    assert row["higher_is_better"] is False and row["verdict"] == "improved"
