"""`evalharness gate`: exit 0 pass, 1 regression, 2 usage or input error."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from evalharness.reporting.gate import GateReport, compare, compare_card, compare_exact, load_run
from evalharness.run.results_files import atomic_write


def add_parser(commands: Any) -> None:
    gate = commands.add_parser("gate", help="fail when a candidate run regresses against a baseline or the card")
    gate.add_argument("--baseline", help="baseline run directory or results.json")
    gate.add_argument("--candidate", required=True, help="candidate run directory")
    gate.add_argument("--max-drop", type=float, default=1.0, help="points a metric may drop before it can fail (default 1.0)")
    gate.add_argument("--alpha", type=float, default=0.05, help="significance level after Holm correction (default 0.05)")
    gate.add_argument("--metric", action="append", default=[], help="TASK:METRIC to gate (repeatable; default: all shared)")
    gate.add_argument("--summary", help="write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)")
    gate.add_argument("--json", dest="json_out", help="write the JSON verdict here")
    gate.add_argument("--card", help="gate against a model card's numbers instead, e.g. llama-2-7b")
    gate.add_argument("--tolerance", type=float, default=2.0, help="points below the card allowed (with --card)")
    gate.add_argument("--exact", action="store_true", help="golden check: identical prompts and predictions, numbers within 1e-5")
    gate.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def run(args: argparse.Namespace) -> int:
    from evalharness.core.errors import EvalHarnessError

    candidate = load_run(args.candidate)
    if args.card:
        report = compare_card(candidate, args.card, args.tolerance, args.alpha)
    elif not args.baseline:
        raise EvalHarnessError("gate needs --baseline RUN or --card NAME")
    elif args.exact:
        report = compare_exact(load_run(args.baseline), candidate)
    else:
        report = compare(load_run(args.baseline), candidate, args.metric, args.max_drop, args.alpha, args.seed)
    print(format_table(report))
    if args.summary:
        atomic_write(Path(args.summary), [format_markdown(report)])
    if args.json_out:
        atomic_write(Path(args.json_out), [json.dumps(report.to_json(), indent=2) + "\n"])
    return report.exit_code


def _rows(report: GateReport) -> list[list[str]]:
    rows = []
    for v in report.verdicts:
        if v.test == "exact":
            rows.append([v.task, v.metric, "", "", "", v.test, "", "", v.verdict.upper(), v.detail])
            continue
        rows.append([v.task, v.metric, f"{100 * v.baseline:.2f}", f"{100 * v.candidate:.2f}", f"{v.delta_points:+.2f}",
                     v.test, _p(v.p_value), _p(v.p_adjusted), v.verdict.upper() if v.verdict != "pass" else "pass", v.detail])
    return rows


HEADER = ["task", "metric", "baseline", "candidate", "delta", "test", "p", "p (Holm)", "verdict", "detail"]


def _p(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


def format_table(report: GateReport) -> str:
    if not report.verdicts:
        return "\n".join([f"note: {n}" for n in report.notes] + ["gate: PASS"])
    rows = [HEADER, *_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    result = "REGRESSION" if report.exit_code else "PASS"
    return "\n".join(lines + [""] + [f"note: {n}" for n in report.notes] + [f"gate: {result}"])


def format_markdown(report: GateReport) -> str:
    icon = "❌ regression" if report.exit_code else "✅ pass"
    lines = [f"### evalharness gate: {icon}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _rows(report)]
    lines += [""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"
