"""``evalharness report RUN_DIR [RUN_DIR ...] --format md|html [--card MODEL] [--output FILE]``.

Wired into ``evalharness.cli.main`` with ``report_cli.add_parser(commands)`` and dispatch
``"report": report_cli.run``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from evalharness.core.errors import DataError, EvalHarnessError
from evalharness.run.results_files import atomic_write

log = logging.getLogger(__name__)


def add_parser(subcommands: Any) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to an ``add_subparsers()`` object."""
    from evalharness.reporting.card import load_card

    parser = subcommands.add_parser(
        "report", help="compare runs with the Llama 2 card (Markdown or HTML)",
        description="Runs side by side with the card's numbers: grouped categories, safety, every "
                    "benchmark, per-task drill-down (and, in HTML, a chart and a sample browser).",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by `evalharness run`")
    parser.add_argument("--format", choices=("md", "html"), default=None,
                        help="md (GitHub-flavoured) or html (one self-contained file);"
                             " default: html if --output ends in .html, else md")
    parser.add_argument("--card", choices=tuple(load_card().models), default=None,
                        help="card model to compare with (default: inferred from the model name, else llama-2-7b)")
    parser.add_argument("--output", "-o", help="write here instead of standard output")
    parser.add_argument("--samples", type=int, default=200, metavar="N",
                        help="HTML sample browser: at most N documents per task and run (default 200)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Exit 0 with the report written; a run it cannot read, or a file it cannot write, is exit 2."""
    try:
        return _run(args)
    except EvalHarnessError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed run must be one line, never a traceback
        if getattr(args, "debug", False):
            raise
        raise DataError(f"report could not read its runs ({type(exc).__name__}: {exc});"
                        " rerun with --debug for details") from None


def _run(args: argparse.Namespace) -> int:
    from evalharness.reporting.render import render_html, render_markdown
    from evalharness.reporting.report import build_report

    fmt = args.format or ("html" if args.output and Path(args.output).suffix.lower() in (".html", ".htm") else "md")
    report = build_report(args.runs, args.card)
    text = render_html(report, max(0, args.samples)) if fmt == "html" else render_markdown(report)
    if args.output:
        try:
            atomic_write(Path(args.output), [text])
        except OSError as exc:
            raise DataError(f"--output {args.output}: cannot write ({exc.strerror or exc})") from None
        log.info("report: %s", args.output)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m evalharness.cli.report``); ``evalharness report`` is the usual one."""
    parser = argparse.ArgumentParser(prog="evalharness")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except EvalHarnessError as exc:
        sys.stderr.write(f"evalharness: error: {exc}\n")
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
