"""The command line: a thin layer over evalharness.evaluate()."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from evalharness.cli import gate as gate_cli
from evalharness.cli import report as report_cli
from evalharness.cli import tasks_command
from evalharness.core.errors import EvalHarnessError

log = logging.getLogger("evalharness")

MAX_SEED = 2**32 - 1  # numpy's limit; torch and random accept it too


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes as one line plus where to look, not argparse's usage block."""

    subcommands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"evalharness: error: {message} (see '{self.prog} --help')\n")


def parse_kv(text: str, option: str) -> dict[str, Any]:
    """``k=v,k=v`` with ints, floats and booleans converted."""
    out: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EvalHarnessError(f"{option} {text!r}: expected key=value[,key=value...]")
        out[key.strip()] = _convert(value.strip())
    return out


def _convert(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def int_at_least(minimum: int) -> Any:
    """An argparse type: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)


def batch_size(text: str) -> int | str:
    return "auto" if text == "auto" else positive_int(text)


def seed(text: str) -> int:
    value = non_negative_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text!r} is too large (0 to {MAX_SEED})")
    return value


def non_empty(text: str) -> str:
    """A path or name: '' would silently mean "the default" (or the hub) further down."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="evalharness", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="evaluate a model on tasks")
    run.add_argument("--model", required=True, type=non_empty,
                     help="local model folder or Hugging Face Hub id; openai:<served-name>; endpoint:<scoring-url>")
    run.add_argument("--backend", help="hf (default: Hugging Face transformers in this process), openai or endpoint")
    run.add_argument("--dry-run", action="store_true",
                     help="plan only: documents, requests, prompt tokens, truncation and the first prompt per task")
    run.add_argument("--tasks", required=True, help="comma-separated task or subtask names")
    run.add_argument("--num-fewshot", type=non_negative_int, help="override each task's shots")
    run.add_argument("--limit", type=positive_int, help="first N documents of each subtask")
    run.add_argument("--batch-size", type=batch_size,
                     help="rows per forward pass, or 'auto' (from free memory); default: 8 for scoring,"
                          " generation's decode batch from free memory (up to 64)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    run.add_argument("--seed", type=seed, default=1234, help=f"0 to {MAX_SEED}")
    run.add_argument("--data-dir", type=non_empty, help="local data root (default: $EVALHARNESS_DATA_DIR, else the hub)")
    run.add_argument("--output", type=non_empty, help="results directory (default: runs/<model>-<time>)")
    run.add_argument("--no-log-prompts", action="store_true", help="leave prompts out of samples.jsonl")
    run.add_argument("--model-args", default="", help="k=v,... passed to the model loader (endpoint: key_env=VAR, deployment=NAME)")
    run.add_argument("--gen-kwargs", default="", help="k=v,... generation settings for every task, or task:k=v for one task")
    run.add_argument("--task-args", default="", help="k=v,... task options, e.g. samples=8 (gsm8k maj@8)")
    run.add_argument("--cache", type=non_empty, help="response cache file (default: $EVALHARNESS_CACHE, else ~/.cache/evalharness/responses.sqlite)")
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the response cache")
    run.add_argument("--prompt-dir", type=non_empty, help="folder of your own Jinja templates, searched before prompts/")
    run.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    run.add_argument("--apply-chat-template", action="store_true", help="wrap prompts in the model's chat format (Llama-2-chat fallback)")
    run.add_argument("--max-length", type=positive_int, help="override the model's context length")
    run.add_argument("--base-url", help="openai backend: server URL(s), comma-separated replicas of one model")
    run.add_argument("--tokenizer", help="openai backend: the served model's tokenizer (folder or hub id)")
    run.add_argument("--concurrency", type=positive_int, help="openai and endpoint backends: requests in flight (default 8)")

    tasks_command.add_parser(commands)
    gate_cli.add_parser(commands)
    report_cli.add_parser(commands)
    parser.subcommands = dict(commands.choices)
    return parser


def default_output(model: str) -> str:
    import time

    stem = Path(model.rstrip("/")).name or "model"
    return str(Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")


def cache_path(args: argparse.Namespace) -> str | None:
    """The response cache file, checked now (a foreign or read-only file fails in seconds)."""
    from evalharness.backends.response_cache import CACHE_ENV, check_cache_path, default_cache_path

    if args.no_cache:
        return None
    origin = "--cache" if args.cache is not None else f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "the default cache"
    path = args.cache if args.cache is not None else str(default_cache_path())
    check_cache_path(path, origin)
    return path


def cmd_run(args: argparse.Namespace) -> int:
    from evalharness.backends.hf.loader import validate_model_args
    from evalharness.backends.registry import DEFAULT_BACKEND, split_model
    from evalharness.run.runner import run
    from evalharness.run.settings import ModelSpec, RunConfig

    model_args = parse_kv(args.model_args, "--model-args")
    backend, model_id = split_model(args.model, args.backend)
    if backend == DEFAULT_BACKEND:
        validate_model_args(model_args)  # before data and model load; other backends check their own

    config = RunConfig(
        tasks=tuple(t for t in args.tasks.split(",") if t.strip()),
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        seed=args.seed,
        data_dir=args.data_dir,
        output_dir=args.output or default_output(args.model),
        log_prompts=not args.no_log_prompts,
        gen_kwargs=parse_kv(args.gen_kwargs, "--gen-kwargs"),
        task_args=parse_kv(args.task_args, "--task-args"),
        prompt_dir=args.prompt_dir,
        apply_chat_template=args.apply_chat_template,
        cache_path=cache_path(args),
    )
    options = {
        "batch_size": args.batch_size, "device": args.device, "dtype": args.dtype,
        "model_args": model_args, "max_length": args.max_length,
        "trust_remote_code": args.trust_remote_code,
    }  # fmt: skip
    remote = {"base_url": args.base_url, "tokenizer": args.tokenizer, "concurrency": args.concurrency}
    options.update({k: v for k, v in remote.items() if v is not None})
    if args.dry_run:
        from evalharness.run.dry_run import dry_run, format_plan

        print(format_plan(*dry_run(config, ModelSpec(model_id, backend, options))))
        return 0
    results = run(config, ModelSpec(model_id, backend, options))
    print(results.table())
    print(f"\nresults: {Path(config.output_dir or '.') / 'results.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand, so the hint names its --help
        parser.subcommands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.debug:
        _quiet_libraries()
    try:
        return {"run": cmd_run, "tasks": tasks_command.run, "gate": gate_cli.run, "report": report_cli.run}[args.command](args)
    except EvalHarnessError as exc:
        if args.debug:
            raise
        print(f"evalharness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("evalharness: interrupted", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    for name in ("transformers", "datasets", "urllib3", "httpx", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
