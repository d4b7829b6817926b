"""Load a causal LM and its tokenizer from a local folder or a hub id, with clear errors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalharness.core.errors import EvalHarnessError, ModelLoadError
from evalharness.backends.hf import gguf
from evalharness.backends.hf.tokenization import load_tokenizer

log = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ModelConfig:
    """How to load a model. ``model_args`` are extra ``from_pretrained`` keyword arguments."""

    name_or_path: str
    dtype: str = "auto"
    device: str = "auto"
    revision: str | None = None
    trust_remote_code: bool = False
    model_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise EvalHarnessError(f"--dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise EvalHarnessError(f"--device {self.device!r}: choose one of {', '.join(DEVICES)}")


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep == "\\" and "\\" in name


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalHarnessError(f"--device {device}: CUDA is not available on this machine")
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def local_weights(folder: Path) -> list[Path]:
    return sorted(p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern))


def _file_digest(path: Path, edge: int = 1 << 20) -> str:
    """Size plus the first and last MiB: identifies multi-GB weights in milliseconds."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(edge))
        if size > 2 * edge:
            fh.seek(-edge, os.SEEK_END)
            digest.update(fh.read(edge))
    return digest.hexdigest()


def weights_identity(name_or_path: str, model: Any) -> dict[str, Any]:
    if gguf.is_gguf_path(name_or_path):  # the GGUF file's sha256, not the converted folder's
        return gguf.gguf_identity(Path(name_or_path))
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        files = {p.name: _file_digest(p) for p in local_weights(folder)}
        combined = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        return {"source": "local", "path": str(folder.resolve()), "weights_sha256": combined}
    return {
        "source": "hub",
        "id": name_or_path,
        "revision": getattr(model.config, "_commit_hash", None),
    }


def load_model(config: ModelConfig) -> tuple[Any, Any, str]:
    """Returns (model, tokenizer, device). Raises ModelLoadError with a one-line reason."""
    import torch
    from transformers import AutoModelForCausalLM

    name = config.name_or_path
    if gguf.is_gguf_path(name):  # converted once to a float32 folder, cached by sha256
        name = str(gguf.converted_folder(Path(name)))
    folder = Path(name).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise ModelLoadError(f"model path {name!r} is a file; give the model's folder")
        if not local_weights(folder) and "gguf_file" not in config.model_args:
            raise ModelLoadError(
                f"model folder {name!r} has no weights ({', '.join(WEIGHT_PATTERNS)})"
            )
        if not (folder / "config.json").exists() and "gguf_file" not in config.model_args:
            raise ModelLoadError(f"model folder {name!r} has no config.json")
    elif looks_like_path(name):
        raise ModelLoadError(f"model path {name!r} does not exist")

    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    common: dict[str, Any] = {"trust_remote_code": config.trust_remote_code}
    if config.revision:
        common["revision"] = config.revision
    tokenizer_args = {k: v for k, v in config.model_args.items() if k == "gguf_file"}
    model_args = {k: v for k, v in config.model_args.items() if k != "eos_token_id"}
    try:
        tokenizer = load_tokenizer(name, **common, **tokenizer_args)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **common, **model_args)
    except (OSError, ValueError, ImportError) as exc:
        where = "local folder" if folder.exists() else "Hugging Face Hub id (offline? use a local path)"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load model {name!r} as a {where}: {first_line}") from exc
    model.to(device)
    model.eval()
    torch.set_grad_enabled(False)
    return model, tokenizer, device
