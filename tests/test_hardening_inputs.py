"""Every bad input ends as one line on stderr naming the culprit, with exit code 2.

One table: option, value, expected exit code, a word the message must contain. Bad model
folders are real copies of tiny-random-llama2 (symlinked) with one file broken.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from evalharness.cli.main import main
from tests.conftest import DATA, TINY_LLAMA, run_cli

BASE = ["--tasks", "mmlu_anatomy", "--limit", "1", "--data-dir", str(DATA), "--device", "cpu",
        "--no-cache", "--no-log-prompts"]


def _model_copy(root: Path, broken: str, content: bytes) -> Path:
    """tiny-random-llama2 with one file replaced by ``content``."""
    folder = root / "model"
    folder.mkdir()
    for item in TINY_LLAMA.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / broken).unlink()
    (folder / broken).write_bytes(content)
    return folder


def _config_with(**changes: object) -> bytes:
    config = json.loads((TINY_LLAMA / "config.json").read_text())
    return json.dumps({**config, **changes}).encode()


def _chat_template(template: str) -> bytes:
    config = json.loads((TINY_LLAMA / "tokenizer_config.json").read_text())
    return json.dumps({**config, "chat_template": template}).encode()


def _readonly(root: Path) -> Path:
    path = root / "ro.sqlite"
    path.write_bytes(b"")
    path.chmod(0o444)
    return path


def _text_file(root: Path) -> Path:
    path = root / "notes.txt"
    path.write_text("notes\n")
    return path


WEIGHTS = (TINY_LLAMA / "model.safetensors").read_bytes()[:100_000]
# (option, value or a builder of it from tmp_path, exit code, a word the message must contain)
CASES: list[tuple[str, str | Callable[[Path], object], int, str]] = [
    ("--seed", "100000000000000000000000", 2, "--seed"),
    ("--seed", "-1", 2, "--seed"),
    ("--seed", "4294967296", 2, "4294967295"),
    ("--model-args", "foo=bar", 2, "eos_token_id"),
    ("--model-args", "dtype=float16", 2, "--dtype"),
    ("--model-args", "device=cuda", 2, "--device"),
    ("--model-args", "eos_token_id=abc", 2, "eos_token_id"),
    ("--model-args", "eos_token_id=-3", 2, "eos_token_id"),
    ("--model-args", "eos_token_id=99999999", 2, "vocabulary"),
    ("--data-dir", "", 2, "--data-dir"),
    ("--output", "", 2, "--output"),
    ("--cache", "", 2, "--cache"),
    ("--prompt-dir", "", 2, "--prompt-dir"),
    ("--model", "", 2, "--model"),
    ("--cache", lambda tmp: tmp, 2, "directory"),
    ("--cache", _readonly, 2, "read-only"),
    ("--cache", _text_file, 2, "not an evalharness"),
    ("--output", _text_file, 2, "--output"),
    ("--limit", "0", 2, "--limit"),
    ("--bogus", "1", 2, "run --help"),
    ("--model", lambda tmp: _model_copy(tmp, "model.safetensors", WEIGHTS), 2, "model.safetensors"),
    ("--model", lambda tmp: _model_copy(tmp, "model.safetensors", os.urandom(5000)), 2, "model.safetensors"),
    ("--model", lambda tmp: _model_copy(tmp, "model.safetensors", b"\x01"), 2, "model.safetensors"),
    ("--model", lambda tmp: _model_copy(tmp, "config.json", _config_with(hidden_size="abc")), 2, "hidden_size"),
    ("--model", lambda tmp: _model_copy(tmp, "config.json", _config_with(rms_norm_eps=[1])), 2, "rms_norm_eps"),
    ("--model", lambda tmp: _model_copy(tmp, "config.json", b'{"hidden_size": '), 2, "config.json"),
    ("--model", lambda tmp: _model_copy(tmp, "config.json", b"[1, 2]"), 2, "config.json"),
    ("--apply-chat-template", lambda tmp: _model_copy(
        tmp, "tokenizer_config.json", _chat_template("{{ raise_exception('no user role') }}")), 2, "no user role"),
    ("--apply-chat-template", lambda tmp: _model_copy(
        tmp, "tokenizer_config.json", _chat_template("{% for m in messages %}{{ m.content }")), 2, "chat template"),
    ("--apply-chat-template", lambda tmp: _model_copy(
        tmp, "tokenizer_config.json", _chat_template("{{ messages[5].content }}")), 2, "chat template"),
]


def _args(option: str, value: str | Callable[[Path], object], tmp_path: Path) -> list[str]:
    built = value(tmp_path) if callable(value) else value
    if option == "--model":
        return ["run", f"--model={built}", *BASE]
    if option == "--apply-chat-template":  # the value is the model whose template is broken
        return ["run", "--model", str(built), *BASE, "--apply-chat-template"]
    base = [a for a in BASE if a != "--no-cache"] if option == "--cache" else BASE
    return ["run", "--model", str(TINY_LLAMA), *base, f"{option}={built}"]


@pytest.mark.parametrize("option, value, code, word", CASES,
                         ids=[f"{c[0]}:{c[1] if isinstance(c[1], str) else i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line(tmp_path, capsys, option, value, code, word):
    args = _args(option, value, tmp_path)
    try:
        got = main(args)
    except SystemExit as exc:  # argparse
        got = int(exc.code or 0)
    err = capsys.readouterr().err
    assert got == code, err
    assert err.count("\n") == 1 and err.startswith("evalharness: error:"), err
    assert word in err


def test_argparse_errors_are_one_line_in_a_real_shell():
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "mmlu", "--seed", "100000000000000000000000")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "evalharness: error: argument --seed: '100000000000000000000000' is too large (0 to 4294967295)"
        " (see 'evalharness run --help')"
    ]


def test_a_large_valid_seed_runs(tmp_path):
    proc = run_cli("run", "--model", str(TINY_LLAMA), *BASE, "--seed", str(2**32 - 1), "--output", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "results.json").read_text())["seeds"]["numpy"] == 2**32 - 1


def test_known_model_args_still_load(tmp_path):
    shutil.rmtree(tmp_path)
    code = main(["--debug", "run", "--model", str(TINY_LLAMA), *BASE, "--output", str(tmp_path),
                 "--model-args", "eos_token_id=2,attn_implementation=eager"])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["model"]["eos_token_ids"] == [2]
