"""Both harnesses' per-document outputs, read into one shape for comparison.

A ``DocRecord`` is keyed by ``(subtask, doc_id)``: our subtask name (``mmlu_anatomy``,
``bbh_sports_understanding``, or the task's name) and the index in the source split. How to read
a task's records is in its ``TaskSpec``: choice tasks give (context, continuation) pairs with
their log-likelihoods, generation tasks the prompt, the greedy generation and the extracted answer.

Our samples log each document's prompt and log-likelihoods but not the continuations scored, so
those come from our own planner (``evalharness.run.planning.plan``, the code the run itself uses),
checked against the logged prompt hash.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specs import Part, TaskSpec

Key = tuple[str, int]


@dataclass(frozen=True)
class DocRecord:
    contexts: tuple[str, ...]  # choice: one per continuation; generation: the prompt
    continuations: tuple[str, ...] = ()
    logprobs: tuple[float, ...] = ()
    generation: str | None = None
    prediction: str | None = None
    score: float = 0.0

    @property
    def prompt(self) -> str:
        """The text compared as "the prompt": the context, or (partial scoring, as WinoGrande) the
        distinct contexts one per line."""
        return "\n".join(dict.fromkeys(self.contexts))


def choice_prediction(logprobs: tuple[float, ...], continuations: tuple[str, ...], norm: bool) -> str:
    """The arg-max choice; with ``norm`` per character of the choice (acc_norm; both harnesses put
    one space, the target delimiter, before each choice and do not count it)."""
    values = [lp / max(len(c.removeprefix(" ")), 1) if norm else lp for lp, c in zip(logprobs, continuations, strict=True)]
    return str(max(range(len(values)), key=values.__getitem__))


# ---------------------------------------------------------------------------------------------
# this harness


def planned(parts: Iterable[Part], limit: int, data_dir: Path, kind: str = "") -> dict[Key, Any]:
    """Our planner's documents (prompt and requests, as ``evalharness run`` builds them) for the
    tasks of ``parts`` (only those of ``kind``, when given), keyed like the records."""
    from evalharness.core.prompt_render import PromptRenderer
    from evalharness.data.source import DataSource
    from evalharness.run.planning import plan
    from evalharness.run.settings import RunConfig

    tasks = tuple(t for p in parts if p.spec.kind == kind or not kind for t in p.our_tasks)
    if not tasks:
        return {}
    config = RunConfig(tasks, limit=limit, data_dir=str(data_dir))
    return {(item.doc.subtask, item.doc.doc_id): item for item in plan(config, DataSource(data_dir), PromptRenderer())}


def scored_pairs(item: Any) -> list[tuple[str, str]]:
    """The (context, continuation) pairs of a planned document's log-likelihood requests."""
    from evalharness.core.requests import LoglikelihoodRequest

    return [(r.context, r.continuation) for r in item.requests if isinstance(r, LoglikelihoodRequest)]


def read_ours(samples: Path, parts: Iterable[Part], limit: int, data_dir: Path) -> dict[Key, DocRecord]:
    """Our ``samples.jsonl``, for the documents of ``parts``."""
    parts = list(parts)
    spec_of = {task: p.spec for p in parts for task in p.our_tasks}
    ours = planned(parts, limit, data_dir, "choice")
    docs: dict[Key, DocRecord] = {}
    for line in samples.read_text("utf-8").splitlines():
        s = json.loads(line)
        spec = spec_of.get(s["subtask"])
        if spec is None:
            continue
        key = (s["subtask"], int(s["doc_id"]))
        score = float(s["metrics"][spec.our_metric])
        if spec.kind == "generation":
            answer = spec.normalise(spec.our_answer(s))
            docs[key] = DocRecord((s["prompt"],), generation=s["output"], prediction=answer, score=score)
            continue
        if ours[key].prompt.sha256 != s["prompt_hash"]:
            raise RuntimeError(f"{samples}: {key} was logged with another prompt than our planner builds")
        output = s["output"]
        logprobs = tuple(float(x) for x in (output.values() if isinstance(output, dict) else output))
        pairs = scored_pairs(ours[key])[: len(logprobs)]  # after them, calibration requests (boolq's)
        contexts, continuations = (tuple(x) for x in zip(*pairs, strict=True))
        prediction = choice_prediction(logprobs, continuations, spec.norm)
        docs[key] = DocRecord(contexts, continuations, logprobs, prediction=prediction, score=score)
    return docs


# ---------------------------------------------------------------------------------------------
# lm-evaluation-harness


def _arguments(s: Mapping[str, Any]) -> list[list[str]]:
    """Each request's positional arguments (the log stores them as {gen_args_i: {arg_j: ...}})."""
    args = s["arguments"]
    if isinstance(args, dict):
        return [[a[f"arg_{j}"] for j in range(len(a))] for a in (args[f"gen_args_{i}"] for i in range(len(args)))]
    return list(args)


def read_lm_eval(out: Path, parts: Iterable[Part]) -> dict[Key, DocRecord]:
    """lm-eval's ``samples_<task>_*.jsonl`` under ``out``, for the documents of ``parts``."""
    docs: dict[Key, DocRecord] = {}
    for part in parts:
        spec = part.spec
        for name, subtask in part.lm_eval_keys().items():
            files = sorted(out.rglob(f"samples_{name}_*.jsonl"))
            if not files:
                raise RuntimeError(f"lm-eval wrote no samples for {name} under {out}")
            by_doc: dict[int, list[dict[str, Any]]] = defaultdict(list)  # one line per filter
            for line in files[-1].read_text("utf-8").splitlines():
                s = json.loads(line)
                by_doc[int(s["doc_id"])].append(s)
            for doc_id, lines in by_doc.items():
                docs[(subtask, doc_id)] = _lm_eval_record(spec, lines)
    return docs


def _lm_eval_record(spec: TaskSpec, lines: list[dict[str, Any]]) -> DocRecord:
    s = lines[0]
    args = _arguments(s)
    if spec.kind == "generation":
        chosen = next((x for x in lines if x.get("filter") == spec.lm_eval_filter), None)
        if chosen is None:
            raise RuntimeError(f"lm-eval samples of {spec.name} have no filter {spec.lm_eval_filter!r}")
        return DocRecord(
            (args[0][0],),
            generation=s["resps"][0][0],
            prediction=spec.normalise(chosen["filtered_resps"][0]),
            score=float(chosen[spec.lm_eval_metric]),
        )
    logprobs = tuple(float(r[0][0]) for r in s["resps"])
    contexts, continuations = tuple(a[0] for a in args), tuple(a[1] for a in args)
    return DocRecord(
        contexts,
        continuations,
        logprobs,
        prediction=choice_prediction(logprobs, continuations, spec.norm),
        score=float(s[spec.lm_eval_metric]),
    )
