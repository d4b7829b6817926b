"""Render the lm-eval task YAMLs for the local data.

The templates in ``benchmarks/lm_eval_tasks/*.yaml.tmpl`` mirror lm-eval's own task definitions
and differ where their header comments say (the data source always; the prompt where this
harness's protocol differs). They carry ``@NAME@`` fields that are filled in here, per task and
subtask, by the template's function in ``FIELDS``, and are written to ``.cache/lm_eval_tasks/``,
the folder passed to ``lm-eval --include_path`` (with the templates' helper ``.py`` files).
Where lm-eval's prompt needs the hub's record layout (TruthfulQA, ARC), the local file is
converted into ``.cache/lm_eval_tasks/data/``.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specs import Part

log = logging.getLogger(__name__)

FIELD = re.compile(r"@([A-Z_]+)@")
TEMPLATES = Path(__file__).resolve().parent / "lm_eval_tasks"


@dataclass(frozen=True)
class Target:
    """Where one task's YAML is rendered from: the local data and the folder for converted files."""

    data: Path  # shared/data
    converted: Path  # .cache/lm_eval_tasks/data
    task: str  # our task name (arc_easy)
    subtask: str  # "" for a task without subtasks


def _fill(template: str, **fields: str) -> str:
    """Replace each ``@NAME@`` outside comment lines; a field left unfilled is an error."""
    lines = []
    for line in template.splitlines(keepends=True):
        if not line.lstrip().startswith("#"):
            line = FIELD.sub(lambda m: fields[m.group(1)], line)
        lines.append(line)
    return "".join(lines)


def _quoted(value: object) -> str:
    """A YAML scalar or flow collection (JSON is valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _json_lines(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_json_lines(path: Path, rows: Iterable[dict[str, Any]]) -> str:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return _quoted(str(path))


def _mmlu(t: Target) -> dict[str, str]:
    topic = t.subtask.replace("_", " ")
    return {
        "TEST_FILE": _quoted(str(t.data / "mmlu" / "test" / f"{t.subtask}_test.csv")),
        "DEV_FILE": _quoted(str(t.data / "mmlu" / "dev" / f"{t.subtask}_dev.csv")),
        "DESCRIPTION": _quoted(f"The following are multiple choice questions (with answers) about {topic}.\n\n"),
    }


def _gsm8k(t: Target) -> dict[str, str]:
    rows = _json_lines(t.data / "gsm8k" / "cot_8shot_exemplars.jsonl")
    return {
        "TEST_FILE": _quoted(str(t.data / "gsm8k" / "test.jsonl")),
        "EXEMPLARS": _quoted([{"question": r["question"], "target": r["cot_answer"]} for r in rows]),
    }


def _truthfulqa(t: Target) -> dict[str, str]:
    """mc_task.json ({question, mc1_targets: {answer: label}, ...}) as hub-style JSON lines."""
    rows = json.loads((t.data / "truthfulqa" / "mc_task.json").read_text("utf-8"))
    records = (
        {"question": row["question"]}
        | {key: {"choices": list(row[key]), "labels": [int(v) for v in row[key].values()]}
           for key in ("mc1_targets", "mc2_targets")}
        for row in rows
    )  # fmt: skip
    return {"MC_FILE": _write_json_lines(t.converted / "truthfulqa_mc.jsonl", records)}


def _arc(t: Target) -> dict[str, str]:
    from evalharness.tasks.arc import from_release  # the release layout -> the hub's, as our task reads it

    subset = t.task.removeprefix("arc_").capitalize()
    rows = _json_lines(t.data / "arc" / f"ARC-{subset}-Test.jsonl")
    return {"TEST_FILE": _write_json_lines(t.converted / f"{t.task}_test.jsonl", map(from_release, rows))}


def _validation(folder: str, name: str) -> Callable[[Target], dict[str, str]]:
    return lambda t: {"VALIDATION_FILE": _quoted(str(t.data / folder / name))}


def _triviaqa(t: Target) -> dict[str, str]:
    from evalharness.tasks.triviaqa import typical_alias  # the answer our task shows for a pool question

    pool = _json_lines(t.data / "triviaqa" / "unfiltered_train_subset.question_aliases.jsonl.gz")[:5]
    return {
        "VALIDATION_FILE": _quoted(str(t.data / "triviaqa" / "rc.wikipedia.nocontext_validation.jsonl.gz")),
        "EXEMPLARS": _quoted([{"question": r["question"], "target": typical_alias(r["answers"])} for r in pool]),
    }


def _bbh(t: Target) -> dict[str, str]:
    from evalharness.tasks.bbh import parse_cot_prompt  # the official prompt file, split into its examples

    shots = parse_cot_prompt((t.data / "bbh" / "cot-prompts" / f"{t.subtask}.txt").read_text("utf-8"))
    return {
        "TEST_FILE": _quoted(str(t.data / "bbh" / "bbh" / f"{t.subtask}.json")),
        "DESCRIPTION": _quoted(shots[0]["preamble"]),
        "EXEMPLARS": _quoted([{"input": s["input"], "target": s["reasoning"]} for s in shots]),
    }


# template -> the values of its @NAME@ fields (besides TASK and SUBTASK) for one task or subtask
FIELDS: dict[str, Callable[[Target], dict[str, str]]] = {
    "mmlu_subject": _mmlu,
    "gsm8k_cot": _gsm8k,
    "truthfulqa_mc2": _truthfulqa,
    "hellaswag": _validation("hellaswag", "validation.jsonl.gz"),
    "arc": _arc,
    "winogrande": _validation("winogrande", "winogrande_xl_validation.jsonl"),
    "boolq": _validation("boolq", "validation.jsonl"),
    "triviaqa": _triviaqa,
    "bbh_cot": _bbh,
}


def render(out: Path, data_dir: Path, parts: Iterable[Part]) -> Path:
    """Write one YAML per task or subtask of ``parts`` into ``out`` (emptied first); returns it."""
    if out.exists():
        shutil.rmtree(out)
    converted = out / "data"
    converted.mkdir(parents=True)
    for helper in TEMPLATES.glob("*.py"):
        shutil.copy(helper, out / helper.name)
    written: dict[str, str] = {}
    for part in parts:
        template = (TEMPLATES / f"{part.spec.template}.yaml.tmpl").read_text("utf-8")
        for subtask, name in zip(part.subtasks or ("",), part.lm_eval_tasks, strict=True):
            if name not in written:
                fields = FIELDS[part.spec.template](Target(data_dir, converted, part.spec.name, subtask))
                written[name] = _fill(template, TASK=name, SUBTASK=subtask, **fields)
                (out / f"{name}.yaml").write_text(written[name], "utf-8")
    log.info("%d lm-eval task YAMLs in %s", len(written), out)
    return out
