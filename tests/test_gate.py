"""Regression gates on real runs, and the statistics against hand-computed values."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from evalharness.reporting import significance as stats
from tests.conftest import DATA, REPO, TINY_LLAMA, run_cli

GOLDEN = REPO / "tests" / "golden" / "mmlu-tiny-limit2"
RUN = ["run", "--model", str(TINY_LLAMA), "--data-dir", str(DATA), "--device", "cpu", "--dtype", "float32",
       "--no-log-prompts"]


def _run(out: Path, *extra: str) -> Path:
    proc = run_cli(*RUN, "--output", str(out), *extra)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("gate")
    first = _run(base / "a", "--tasks", "mmlu", "--limit", "4")
    second = _run(base / "b", "--tasks", "mmlu", "--limit", "4", "--no-cache")
    return first, second


def _degrade(run: Path, out: Path, flips: int) -> Path:
    """A copy of ``run`` whose first ``flips`` correct answers became wrong, totals recomputed."""
    shutil.copytree(run, out)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    for sample in samples:
        if flips and sample["metrics"]["acc"] == 1.0:
            sample["metrics"]["acc"], flips = 0.0, flips - 1
    (out / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    results = json.loads((out / "results.json").read_text())
    results["tasks"]["mmlu"]["metrics"]["acc"]["value"] = sum(s["metrics"]["acc"] for s in samples) / len(samples)
    results["samples_sha256"] = hashlib.sha256((out / "samples.jsonl").read_bytes()).hexdigest()  # the pair, re-committed
    (out / "results.json").write_text(json.dumps(results))
    return out


def _gate(*args: str):
    return run_cli("gate", *args)


def test_same_model_and_seed_pass(runs):
    proc = _gate("--baseline", str(runs[0]), "--candidate", str(runs[1]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gate: PASS" in proc.stdout and "McNemar exact" in proc.stdout


def test_significant_drop_fails(runs, tmp_path):
    lines = (runs[0] / "samples.jsonl").read_text().splitlines()
    correct = sum(json.loads(line)["metrics"]["acc"] for line in lines)
    worse = _degrade(runs[0], tmp_path / "worse", int(correct))
    summary, verdict = tmp_path / "summary.md", tmp_path / "verdict.json"
    proc = _gate("--baseline", str(runs[0]), "--candidate", str(worse), "--metric", "mmlu:acc",
                 "--summary", str(summary), "--json", str(verdict))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "REGRESSED" in proc.stdout and "gate: REGRESSION" in proc.stdout
    assert "❌" in summary.read_text()
    assert json.loads(verdict.read_text())["result"] == "regressed"


def test_small_drop_within_noise_passes(runs, tmp_path):
    worse = _degrade(runs[0], tmp_path / "slightly", 2)
    proc = _gate("--baseline", str(runs[0]), "--candidate", str(worse), "--metric", "mmlu:acc", "--max-drop", "0.5")
    assert proc.returncode == 0, proc.stdout


def test_mismatched_documents_exit_2(runs, tmp_path):
    other = _run(tmp_path / "other", "--tasks", "mmlu", "--limit", "3")
    proc = _gate("--baseline", str(runs[0]), "--candidate", str(other))
    assert proc.returncode == 2
    assert "different documents" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_metric_exit_2(runs):
    proc = _gate("--baseline", str(runs[0]), "--candidate", str(runs[1]), "--metric", "mmlu:accc")
    assert proc.returncode == 2 and "did you mean: mmlu:acc" in proc.stderr


def test_golden_run_is_reproduced_exactly(tmp_path):
    """The project's own golden check: a change to prompts or scoring fails here."""
    fresh = _run(tmp_path / "fresh", "--tasks", "mmlu", "--limit", "2", "--no-cache")
    proc = _gate("--baseline", str(GOLDEN), "--candidate", str(fresh), "--exact")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_exact_mode_catches_a_changed_prediction(tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(GOLDEN, changed)
    lines = (changed / "samples.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["output"]["A"] += 1e-3
    (changed / "samples.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    proc = _gate("--baseline", str(GOLDEN), "--candidate", str(changed), "--exact")
    assert proc.returncode == 1 and "output" in proc.stdout


def test_mcnemar_by_hand():
    base = [1] * 1 + [0] * 9 + [1] * 5
    cand = [0] * 1 + [1] * 9 + [1] * 5
    b, c, p = stats.mcnemar_exact(base, cand)
    assert (b, c) == (1, 9)
    assert p == pytest.approx(2 * (1 + 10) / 1024)  # 2 × P(X <= 1), X ~ Bin(10, 1/2)
    assert stats.mcnemar_exact([1, 0], [1, 0])[2] == 1.0


def test_bootstrap_is_seeded_and_sensible():
    base = [0.1 * i for i in range(50)]
    same = stats.paired_bootstrap(base, base, seed=3)
    shifted = stats.paired_bootstrap(base, [x + 0.5 + 0.01 * (i % 3) for i, x in enumerate(base)], seed=3)
    assert same == 1.0 and shifted < 0.001
    noisy = [x + (0.3 if i % 2 else -0.3) for i, x in enumerate(base)]
    assert stats.paired_bootstrap(base, noisy, seed=3) == stats.paired_bootstrap(base, noisy, seed=3)
    assert stats.paired_bootstrap(base, noisy, seed=3) > 0.5


def test_holm_and_z_by_hand():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.z_test(0.5, 0.01, 0.5 - 1.96 * 2**0.5 * 0.01, 0.01) == pytest.approx(0.05, abs=1e-3)


def test_gate_against_the_card(runs):
    """The tiny random model is far below Llama 2 7B's MMLU: a credible shortfall fails."""
    proc = _gate("--card", "llama-2-7b", "--tolerance", "2", "--candidate", str(runs[0]))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "vs card (our stderr only)" in proc.stdout and "45.30" in proc.stdout
    lenient = _gate("--card", "llama-2-7b", "--tolerance", "40", "--candidate", str(runs[0]))
    assert lenient.returncode == 0, lenient.stdout
