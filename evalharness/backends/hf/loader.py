"""Load a causal LM and its tokenizer from a local folder or a hub id, with clear errors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalharness.backends.hf import gguf
from evalharness.backends.prompt_fitting import load_tokenizer
from evalharness.core.errors import EvalHarnessError, ModelLoadError

log = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
# --model-args keys we pass on, with what each must be; anything else is a typo or belongs to
# another option (MODEL_ARG_OPTIONS), and passing it silently to from_pretrained would hide that.
MODEL_ARGS: dict[str, str] = {
    "eos_token_id": "a token id (integer >= 0)",
    "gguf_file": "a file name",
    "revision": "a hub revision",
    "attn_implementation": "a name such as eager or sdpa",
}
MODEL_ARG_OPTIONS = {
    "dtype": "--dtype", "torch_dtype": "--dtype", "device": "--device", "device_map": "--device",
    "trust_remote_code": "--trust-remote-code", "max_length": "--max-length",
}
# config.json fields whose wrong type otherwise surfaces as a multi-line validation traceback.
POSITIVE_INT_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "vocab_size", "max_position_embeddings",
)
NUMBER_FIELDS = ("rms_norm_eps", "rope_theta", "initializer_range")
MAX_SAFETENSORS_HEADER = 100 << 20  # the format's own limit


def validate_model_args(model_args: dict[str, Any]) -> None:
    """--model-args: known keys with values of the right type, or a one-line error."""
    for key, value in model_args.items():
        if key in MODEL_ARG_OPTIONS:
            raise EvalHarnessError(f"--model-args {key}=...: use {MODEL_ARG_OPTIONS[key]} instead")
        if key not in MODEL_ARGS:
            raise EvalHarnessError(
                f"--model-args: unknown key {key!r}; known keys: {', '.join(sorted(MODEL_ARGS))}"
            )
        if key == "eos_token_id":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        else:
            ok = isinstance(value, str) and bool(value)
        if not ok:
            raise EvalHarnessError(f"--model-args {key}={value!r}: expected {MODEL_ARGS[key]}")


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
        validate_model_args(self.model_args)


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


def check_config_json(path: Path) -> None:
    """A readable JSON object whose size fields are numbers: otherwise a one-line error naming it."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: unreadable ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: expected a JSON object, got {type(config).__name__}")
    text_config = config.get("text_config")
    for sub in (config, text_config if isinstance(text_config, dict) else {}):
        for name in POSITIVE_INT_FIELDS:
            value = sub.get(name)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ModelLoadError(f"{path}: {name!r} must be a positive integer, got {value!r}")
        for name in NUMBER_FIELDS:
            value = sub.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ModelLoadError(f"{path}: {name!r} must be a number, got {value!r}")


def check_safetensors(path: Path) -> None:
    """Reads only the header: a truncated or foreign file fails here, in one line naming it."""
    bad = f"{path}: not a valid safetensors file"
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise ModelLoadError(f"{bad} (only {size} bytes)")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(MAX_SAFETENSORS_HEADER, size - 8):
                raise ModelLoadError(f"{bad} (header of {length} bytes in a {size}-byte file: truncated or corrupt)")
            header = json.loads(fh.read(length).decode("utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"{path}: unreadable ({exc.strerror})") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ModelLoadError(f"{bad} (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{bad} (its header is not a JSON object)")
    ends = [
        entry.get("data_offsets", [0, 0])[-1] for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list)
    ]
    data_bytes = size - 8 - length
    if any(not isinstance(end, int) or end > data_bytes for end in ends):
        raise ModelLoadError(f"{bad} (truncated: tensors need {max(e for e in ends if isinstance(e, int))} "
                             f"data bytes, the file holds {data_bytes})")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # Validation errors put the field on the first line and the reason on the second.
    return " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]


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
        if (folder / "config.json").is_file():
            check_config_json(folder / "config.json")
        for weights in folder.glob("*.safetensors"):
            check_safetensors(weights)
    elif looks_like_path(name):
        raise ModelLoadError(f"model path {name!r} does not exist")

    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    common: dict[str, Any] = {"trust_remote_code": config.trust_remote_code}
    revision = config.model_args.get("revision", config.revision)
    if revision:
        common["revision"] = revision
    tokenizer_args = {k: v for k, v in config.model_args.items() if k == "gguf_file"}
    model_args = {k: v for k, v in config.model_args.items() if k not in ("eos_token_id", "revision")}
    try:
        tokenizer = load_tokenizer(name, **common, **tokenizer_args)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **common, **model_args)
    except Exception as exc:  # model files can fail in any library layer; --debug shows the cause
        where = "local folder" if folder.exists() else "Hugging Face Hub id (offline? use a local path)"
        raise ModelLoadError(f"could not load model {name!r} as a {where}: {_first_line(exc)}") from exc
    eos = config.model_args.get("eos_token_id")
    vocab = getattr(model.config, "vocab_size", None)
    if isinstance(eos, int) and isinstance(vocab, int) and eos >= vocab:
        raise ModelLoadError(f"--model-args eos_token_id={eos}: the model's vocabulary has {vocab} tokens")
    model.to(device)
    model.eval()
    torch.set_grad_enabled(False)
    return model, tokenizer, device
