"""`evalharness gate`: exit 0 pass, 1 regression, 2 usage or input error."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from evalharness.core.errors import EvalHarnessError
from evalharness.reporting.gate import (
    GateInputError,
    GateReport,
    check_options,
    compare,
    compare_card,
    compare_exact,
    load_gated_run,
)
from evalharness.run.results_files import atomic_write

log = logging.getLogger(__name__)


def add_parser(commands: Any) -> None:
    gate = commands.add_parser("gate", help="fail when a candidate run regresses against a baseline or the card")
    gate.add_argument("--baseline", help="baseline run directory or results.json")
    gate.add_argument("--candidate", required=True, help="candidate run directory")
    # Numbers are parsed in run(), so a bad value is one line naming the option (argparse prints usage too).
    gate.add_argument("--max-drop", default="1.0", help="points a metric may drop before it can fail (default 1.0)")
    gate.add_argument("--alpha", default="0.05",
                      help="significance level after Holm correction, in (0, 1) (default 0.05)")
    gate.add_argument("--metric", action="append", default=[],
                      help="TASK:METRIC to gate (repeatable; default: all shared)")
    gate.add_argument("--summary", help="write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)")
    gate.add_argument("--json", dest="json_out", help="write the JSON verdict here")
    gate.add_argument("--card", help="gate against a model card's numbers instead, e.g. llama-2-7b")
    gate.add_argument("--tolerance", default="2.0", help="points below the card allowed (with --card; default 2)")
    gate.add_argument("--exact", action="store_true",
                      help="golden check: identical prompts and predictions, numbers within 1e-5")
    gate.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def _number(option: str, text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise GateInputError(f"{option} must be a number, not {text!r}") from None


def run(args: argparse.Namespace) -> int:
    """Exit 0 pass, 1 regression; every input the gate could not read or use is a one-line error (exit 2)."""
    try:
        return _run(args)
    except EvalHarnessError:
        raise
    except Exception as exc:  # noqa: BLE001 - CI reads 1 as "regression": never let a crash say that
        if getattr(args, "debug", False):
            raise
        raise GateInputError(f"gate could not evaluate its inputs ({type(exc).__name__}: {exc});"
                             " rerun with --debug for details") from None


def _run(args: argparse.Namespace) -> int:
    alpha = _number("--alpha", args.alpha)
    max_drop = _number("--max-drop", args.max_drop)
    tolerance = _number("--tolerance", args.tolerance)
    check_options(alpha=alpha, max_drop=max_drop, tolerance=tolerance)
    if not args.card and not args.baseline:
        raise GateInputError("gate needs --baseline RUN or --card NAME")
    candidate = load_gated_run(args.candidate)
    if args.card:
        report = compare_card(candidate, args.card, tolerance, alpha)
    elif args.exact:
        report = compare_exact(load_gated_run(args.baseline), candidate)
    else:
        report = compare(load_gated_run(args.baseline), candidate, args.metric, max_drop, alpha, args.seed)
    if args.summary:
        _write("--summary", args.summary, format_markdown(report))
    if args.json_out:
        _write("--json", args.json_out, json.dumps(report.to_json(), indent=2) + "\n")
    sys.stdout.write(format_table(report) + "\n")
    return report.exit_code


def _write(option: str, path: str, text: str) -> None:
    try:
        atomic_write(Path(path), [text])
    except OSError as exc:
        raise GateInputError(f"{option} {path}: cannot write ({exc.strerror or exc})") from None
    log.debug("wrote %s", path)


def _rows(report: GateReport) -> list[list[str]]:
    rows = []
    for v in report.verdicts:
        if v.test == "exact":
            rows.append([v.task, v.metric, "", "", "", v.test, "", "", v.verdict.upper(), v.detail])
            continue
        rows.append([v.task, v.metric, f"{100 * v.baseline:.2f}", f"{100 * v.candidate:.2f}", f"{v.delta_points:+.2f}",
                     v.test, _p(v.p_value), _p(v.p_adjusted), v.verdict.upper() if v.verdict != "pass" else "pass",
                     v.detail])
    return rows


HEADER = ["task", "metric", "baseline", "candidate", "delta", "test", "p", "p (Holm)", "verdict", "detail"]


def _p(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


def format_table(report: GateReport) -> str:
    if not report.verdicts:
        return "\n".join([f"note: {n}" for n in report.notes] + ["gate: PASS"])
    rows = [HEADER, *_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    result = "REGRESSION" if report.exit_code else "PASS"
    return "\n".join(lines + [""] + [f"note: {n}" for n in report.notes] + [f"gate: {result}"])


def format_markdown(report: GateReport) -> str:
    icon = "❌ regression" if report.exit_code else "✅ pass"
    lines = [f"### evalharness gate: {icon}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _rows(report)]
    lines += [""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"
