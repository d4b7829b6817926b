"""A new multiple-choice benchmark is one short module plus one template (issue: "Make a
benchmark one short module"): this test writes one to disk, with no harness change, and runs it
end to end on the real ARC-Easy file in ../shared/data and the real tiny model."""

from __future__ import annotations

import importlib.util
import json

from tests.conftest import DATA, run_cli

MODULE = '''\
"""ARC-Easy, declared: the data, the template and the shape. (A sketch for the test.)"""

from evalharness.core.task import register_task
from evalharness.data.datasets import Dataset, JsonLines
from evalharness.shapes.multiple_choice import MultipleChoice


def from_arc(row):
    labels = [c["label"] for c in row["question"]["choices"]]
    return {"question": row["question"]["stem"], "answer": labels.index(row["answerKey"]),
            "choices": [c["text"] for c in row["question"]["choices"]]}


@register_task
class ArcEasySketch(MultipleChoice):
    name = "arc_easy_sketch"
    version = "0"
    template = "arc_sketch.jinja"
    dataset = Dataset("allenai/ai2_arc", "ARC-Easy", "test",
                      JsonLines({"test": "arc/ARC-Easy-Test.jsonl"}, ("question", "answerKey"), to_record=from_arc))
'''
TEMPLATE = "Question: {{ question }}\nAnswer:"


def test_a_new_multiple_choice_benchmark_is_under_40_lines(tmp_path, tiny_backend):
    assert len(MODULE.splitlines()) + len(TEMPLATE.splitlines()) < 40
    (tmp_path / "arc_sketch.py").write_text(MODULE)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "arc_sketch.jinja").write_text(TEMPLATE)
    spec = importlib.util.spec_from_file_location("arc_sketch", tmp_path / "arc_sketch.py")
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))

    from evalharness import evaluate

    out = evaluate(tiny_backend, ["arc_easy_sketch"], limit=6, data_dir=str(DATA),
                   prompt_dir=str(tmp_path / "prompts"), output_dir=str(tmp_path / "run"))
    task = out.results["tasks"]["arc_easy_sketch"]
    assert task["n"] == 6
    assert set(task["metrics"]) == {"acc", "acc_norm"}
    assert all(m["higher_is_better"] for m in task["metrics"].values())
    first = out.samples[0]
    row = json.loads((DATA / "arc" / "ARC-Easy-Test.jsonl").read_text().splitlines()[0])
    assert first["prompt"] == f"Question: {row['question']['stem']}\nAnswer:"
    assert len(first["output"]) == len(row["question"]["choices"])  # one log-likelihood per choice
    assert first["gold"] == ["A", "B", "C", "D"].index(row["answerKey"])
    assert (tmp_path / "run" / "results.json").is_file()


def test_gen_kwargs_may_target_one_task():
    """``task:key=value`` overrides one task's decoding; a bare key applies to every task."""
    from evalharness.core.prompt_render import PromptRenderer
    from evalharness.data.source import DataSource
    from evalharness.run.planning import plan
    from evalharness.run.settings import RunConfig

    config = RunConfig(
        tasks=("gsm8k", "truthfulqa_gen", "mmlu_anatomy"), limit=2, task_args={"judge": "similarity"},
        gen_kwargs={"max_new_tokens": 3, "gsm8k:max_new_tokens": 5, "truthfulqa_gen:temperature": 0},
    )
    planned = plan(config, DataSource(str(DATA)), PromptRenderer())
    sampling = {p.selection.task.name: p.requests[0].sampling for p in planned if p.selection.task.name != "mmlu"}
    assert sampling["gsm8k"].max_new_tokens == 5
    assert sampling["truthfulqa_gen"].max_new_tokens == 3
    assert sampling["truthfulqa_gen"].greedy  # temperature 0 for this task only
    assert sampling["gsm8k"].greedy


def test_gen_kwargs_for_an_unselected_task_is_one_line_error(tmp_path):
    result = run_cli(
        "run", "--model", str(DATA.parent / "models" / "tiny-random-llama2"), "--tasks", "gsm8k",
        "--limit", "1", "--data-dir", str(DATA), "--device", "cpu", "--no-cache",
        "--gen-kwargs", "gsm8kk:temperature=0.5", "--output", str(tmp_path / "out"),
    )
    assert result.returncode == 2
    assert "did you mean: gsm8k" in result.stderr and len(result.stderr.strip().splitlines()) == 1
