"""Render the lm-eval task YAMLs for the local data.

The templates in ``benchmarks/lm_eval_tasks/*.yaml.tmpl`` mirror lm-eval's own task definitions
and differ only in where the data comes from. They carry ``@NAME@`` fields that are filled in
here with absolute paths, and written to ``.cache/lm_eval_tasks/``, the folder passed to
``lm-eval --include_path``. TruthfulQA's ``mc_task.json`` is converted to the hub's record layout
(``mc2_targets = {choices, labels}``) that lm-eval's prompt expects.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

FIELD = re.compile(r"@([A-Z_]+)@")
TEMPLATES = Path(__file__).resolve().parent / "lm_eval_tasks"


def task_name(task: str, subject: str | None = None) -> str:
    """The lm-eval task name for one of our workloads (``bench_`` avoids lm-eval's built-ins)."""
    if task == "mmlu":
        assert subject is not None
        return f"bench_mmlu_{subject}"
    return {"gsm8k": "bench_gsm8k_cot", "truthfulqa_mc2": "bench_truthfulqa_mc2"}[task]


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


def _truthfulqa_records(mc_task: Path, out: Path) -> None:
    """mc_task.json ({question, mc1_targets: {answer: label}, ...}) as hub-style JSON lines."""
    rows = json.loads(mc_task.read_text("utf-8"))
    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            record = {"question": row["question"]}
            for key in ("mc1_targets", "mc2_targets"):
                record[key] = {"choices": list(row[key]), "labels": [int(v) for v in row[key].values()]}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def render(out: Path, data_dir: Path, subjects: list[str]) -> Path:
    """Write every task YAML (MMLU subjects, gsm8k_cot, truthfulqa_mc2) into ``out``; returns it."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    mmlu = (TEMPLATES / "mmlu_subject.yaml.tmpl").read_text("utf-8")
    for subject in subjects:
        topic = subject.replace("_", " ")
        text = _fill(
            mmlu,
            SUBJECT=subject,
            TEST_FILE=_quoted(str(data_dir / "mmlu" / "test" / f"{subject}_test.csv")),
            DEV_FILE=_quoted(str(data_dir / "mmlu" / "dev" / f"{subject}_dev.csv")),
            DESCRIPTION=_quoted(f"The following are multiple choice questions (with answers) about {topic}.\n\n"),
        )
        (out / f"{task_name('mmlu', subject)}.yaml").write_text(text, "utf-8")

    exemplars = [
        {"question": r["question"], "target": r["cot_answer"]}
        for r in map(json.loads, (data_dir / "gsm8k" / "cot_8shot_exemplars.jsonl").read_text("utf-8").splitlines())
    ]
    gsm8k = _fill(
        (TEMPLATES / "gsm8k_cot.yaml.tmpl").read_text("utf-8"),
        TEST_FILE=_quoted(str(data_dir / "gsm8k" / "test.jsonl")),
        EXEMPLARS=_quoted(exemplars),
    )
    (out / "bench_gsm8k_cot.yaml").write_text(gsm8k, "utf-8")

    data = out / "data"
    data.mkdir()
    _truthfulqa_records(data_dir / "truthfulqa" / "mc_task.json", data / "truthfulqa_mc.jsonl")
    tqa = _fill(
        (TEMPLATES / "truthfulqa_mc2.yaml.tmpl").read_text("utf-8"),
        MC_FILE=_quoted(str(data / "truthfulqa_mc.jsonl")),
    )
    (out / "bench_truthfulqa_mc2.yaml").write_text(tqa, "utf-8")
    shutil.copy(TEMPLATES / "truthfulqa_utils.py", out / "truthfulqa_utils.py")
    log.info("lm-eval task YAMLs for %d MMLU subjects, gsm8k_cot and truthfulqa_mc2 in %s", len(subjects), out)
    return out
