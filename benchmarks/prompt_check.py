"""``bench.py --check-prompts``: are both harnesses' requests identical, at full size, without a model?

Builds every request of each task on both sides — our planner (``records.planned``) and lm-eval's
``build_all_requests`` on the rendered templates — and compares them document by document:
(context, continuation) per log-likelihood request; (context, stop strings, token budget) per
generation. Seconds per task, so it can cover far more documents than a timed row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import records
from compare import first_difference
from specs import Part

log = logging.getLogger(__name__)


def _ours(item: Any) -> list[tuple[Any, ...]]:
    from evalharness.core.requests import GenerateRequest, LoglikelihoodRequest

    out: list[tuple[Any, ...]] = []
    for r in item.requests:
        if isinstance(r, LoglikelihoodRequest):
            out.append((r.context, r.continuation))
        elif isinstance(r, GenerateRequest):
            out.append((r.context, tuple(r.stop), r.sampling.max_new_tokens))
    return out


def _theirs(instance: Any) -> tuple[Any, ...]:
    args = instance.arguments
    if instance.request_type == "generate_until":
        return (args[0], tuple(args[1]["until"]), args[1].get("max_gen_toks"))
    return (args[0], args[1])


def _difference(mine: list[tuple[Any, ...]], theirs: list[tuple[Any, ...]]) -> str:
    where = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
    if where is None:
        return f"ours {len(mine)} requests, lm-eval {len(theirs)}"
    return f"request {where} differs {first_difference(repr(mine[where]), repr(theirs[where]))}"


def check(parts: Sequence[tuple[str, Part, int]], include: Path, data_dir: Path, examples: int = 2) -> str:
    """A Markdown table: per (label, task, limit), the documents whose requests are identical on both sides."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include))
    lines = ["| row | documents | identical requests |", "|---|---:|---:|"]
    for label, part, limit in parts:
        ours = records.planned([part], limit, data_dir)
        tasks = manager.load(part.lm_eval_tasks)["tasks"]
        same = total = 0
        for name, subtask in part.lm_eval_keys().items():
            task = tasks[name]
            task.build_all_requests(limit=limit)
            by_doc: dict[int, list[Any]] = {}
            for instance in sorted(task.instances, key=lambda i: (i.doc_id, i.idx)):
                by_doc.setdefault(instance.doc_id, []).append(_theirs(instance))
            for doc_id, theirs in by_doc.items():
                mine = _ours(ours[(subtask, doc_id)])[: len(theirs)]  # boolq: our calibration requests last
                total += 1
                if mine == theirs:
                    same += 1
                elif total - same <= examples:
                    log.warning("%s #%d: %s", subtask, doc_id, _difference(mine, theirs))
        lines.append(f"| {label} | {total} | {same} ({100 * same / max(total, 1):.1f}%) |")
    return "\n".join(lines) + "\n"
