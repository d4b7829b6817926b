"""``--model path/to/model.gguf``: a llama.cpp GGUF file, converted once to a float32 folder.

transformers can read a GGUF file, but it dequantises every tensor and re-reads the tokenizer
on every load (about 20 s for a 135M model), and a GGUF-loaded model refuses ``save_pretrained``.
So the first load converts the file to a plain float32 safetensors folder with its tokenizer, in
a cache keyed by the file's sha256, and every load reads that folder:

    $XDG_CACHE_HOME/evalharness/gguf/<sha256>/     (default ~/.cache/evalharness/gguf/<sha256>/)

The folder is written under a temporary name beside it and renamed into place when complete,
so a killed conversion never leaves a folder that later passes as done; leftovers of a killed
conversion are removed by the next one. The results' model fingerprint records the GGUF file's
sha256 (``gguf_identity``), not the converted folder's. Needs the ``gguf`` and ``accelerate``
packages (dependencies of evalharness).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from evalharness.core.errors import ModelLoadError
from evalharness.data.source import sha256_file

log = logging.getLogger(__name__)

SUFFIX = ".gguf"
MAGIC = b"GGUF"
SOURCE_FILE = "gguf_source.json"  # written into every converted folder: where it came from
PARTIAL_PREFIX = ".partial-"

_digests: dict[tuple[str, int, int], str] = {}


def is_gguf_path(name_or_path: str) -> bool:
    """Whether ``--model`` names a GGUF file (by its suffix, as llama.cpp writes them)."""
    return name_or_path.lower().endswith(SUFFIX)


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/evalharness/gguf``, else ``~/.cache/evalharness/gguf``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "evalharness" / "gguf"


def gguf_sha256(path: Path) -> str:
    """The file's sha256, computed once per process for an unchanged file."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        _digests[key] = sha256_file(path)
    return _digests[key]


def gguf_identity(path: Path) -> dict[str, Any]:
    """The ``weights`` entry of the model fingerprint: the GGUF file itself, by content."""
    path = _existing_file(path)
    return {
        "source": "gguf",
        "file": path.name,
        "bytes": path.stat().st_size,
        "gguf_sha256": gguf_sha256(path),
    }


def converted_folder(path: Path, cache: Path | None = None) -> Path:
    """The float32 safetensors folder of ``path``: from the cache, else converted now (once)."""
    path = _existing_file(path)
    cache = cache or cache_root()
    digest = gguf_sha256(path)
    target = cache / digest
    if (target / SOURCE_FILE).is_file():
        log.info("GGUF %s: using the converted folder %s", path.name, target)
        return target
    check_gguf(path)
    cache.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(cache, digest)
    partial = Path(tempfile.mkdtemp(dir=cache, prefix=f"{PARTIAL_PREFIX}{digest[:16]}-{os.getpid()}-"))
    try:
        log.info(
            "GGUF %s (%.0f MiB): converting to float32 safetensors in %s (once per file)",
            path.name, path.stat().st_size / 2**20, target,
        )
        started = time.perf_counter()
        convert(path, partial)
        source = {"file": path.name, "bytes": path.stat().st_size, "gguf_sha256": digest}
        (partial / SOURCE_FILE).write_text(json.dumps(source, indent=1) + "\n", "utf-8")
        _publish(partial, target)
        log.info("GGUF %s: converted in %.1f s", path.name, time.perf_counter() - started)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def check_gguf(path: Path) -> None:
    """Read the header and tensor table; a wrong, truncated or corrupt file is a one-line error."""
    with path.open("rb") as fh:
        head = fh.read(len(MAGIC))
    if head != MAGIC:
        raise ModelLoadError(f"{path}: not a GGUF file (it starts with {head!r}, not {MAGIC!r})")
    reader_class = _require_packages()
    try:
        reader = reader_class(str(path))
        expected_end = max(
            (int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0
        )
    except Exception as exc:  # the reader raises ValueError, IndexError, KeyError... on bad input
        raise ModelLoadError(f"{path}: truncated or corrupt GGUF file ({_first_line(exc)})") from exc
    size = path.stat().st_size
    if expected_end > size:
        raise ModelLoadError(f"{path}: truncated GGUF file ({size} bytes, its tensors need {expected_end})")
    if not reader.tensors:
        raise ModelLoadError(f"{path}: the GGUF file holds no tensors")


def convert(path: Path, out: Path) -> None:
    """Dequantise ``path`` to float32 and save it with its tokenizer as a plain folder ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_packages()
    src, name = str(path.parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError, NotImplementedError) as exc:
        raise ModelLoadError(f"{path}: transformers cannot load this GGUF file: {_first_line(exc)}") from exc
    # The weights are plain float32 now; without these two, save_pretrained refuses a GGUF model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    try:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    except OSError as exc:  # e.g. a full disk: the float32 folder is about 4 bytes per parameter
        raise ModelLoadError(f"cannot write the converted model to {out}: {_first_line(exc)}") from exc


def _publish(partial: Path, target: Path) -> None:
    """Rename the finished folder into place; another process may have finished first."""
    try:
        os.rename(partial, target)
    except OSError:
        if not (target / SOURCE_FILE).is_file():
            if target.exists():  # not ours and not complete (written by an older layout): replace
                shutil.rmtree(target)
                os.rename(partial, target)
                return
            raise
        log.info("GGUF: %s was converted by another process meanwhile; using it", target)


def _remove_abandoned(cache: Path, digest: str) -> None:
    """Delete partial folders of this file left by conversions whose process is gone."""
    for leftover in cache.glob(f"{PARTIAL_PREFIX}{digest[:16]}-*"):
        pid = leftover.name.removeprefix(PARTIAL_PREFIX).split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            log.info("GGUF: removing %s, left by an interrupted conversion", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _existing_file(path: Path) -> Path:
    path = path.expanduser()
    if not path.exists():
        raise ModelLoadError(f"GGUF file {str(path)!r} does not exist")
    if not path.is_file():
        raise ModelLoadError(f"GGUF path {str(path)!r} is not a file")
    return path


def _require_packages() -> Any:
    try:
        import accelerate  # noqa: F401  (transformers' GGUF loader needs it)
        from gguf import GGUFReader
    except ImportError as exc:
        raise ModelLoadError(
            f"reading GGUF files needs the packages gguf and accelerate ({exc}): pip install gguf accelerate"
        ) from exc
    return GGUFReader


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":  # python -m evalharness.backends.hf.gguf FILE.gguf: convert (or find) it
    import sys

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.stdout.write(f"{converted_folder(Path(sys.argv[1]))}\n")
