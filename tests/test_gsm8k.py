"""GSM8K 8-shot chain of thought: exact prompt, answer extraction, end to end."""

from __future__ import annotations

import json

import pytest

from evalharness.core.prompt_render import PromptRenderer
from evalharness.core.task_selection import resolve
from evalharness.data.source import DataSource
from evalharness.shapes.answer_extraction import gsm8k_gold, last_number, normalize_number, strict_answer
from tests.conftest import DATA, STORIES, TINY_LLAMA, run_cli


def test_first_test_prompt_is_exact():
    (selection,) = resolve(["gsm8k"])
    task, data = selection.task, DataSource(DATA)
    doc = task.documents(data, "gsm8k")[0]
    pool = task.fewshot_pool(data, "gsm8k")
    prompt = PromptRenderer().build(task, doc, task.select_fewshot(pool, 8, doc, 0))
    exemplars = [json.loads(line) for line in (DATA / "gsm8k" / "cot_8shot_exemplars.jsonl").read_text().splitlines()]
    first = json.loads((DATA / "gsm8k" / "test.jsonl").read_text().splitlines()[0])
    expected = "".join(f"Q: {e['question']}\nA: {e['cot_answer']}\n\n" for e in exemplars)
    expected += f"Q: {first['question']}\nA:"
    assert prompt.text == expected
    assert prompt.text.startswith("Q: There are 15 trees in the grove.")
    assert prompt.text.endswith("How much in dollars does she make every day at the farmers' market?\nA:")
    assert doc.fields["gold"] == "18"


@pytest.mark.parametrize(
    ("generation", "strict", "flexible"),
    [
        (" She has 16 - 3 - 4 = 9 eggs. 9 * 2 = 18. The answer is 18.", "18", "18"),
        (" The total is $1,234.50 dollars. The answer is $1,234.50.", None, "1234.5"),
        (" It costs 1,000 dollars. The answer is 1,000.", "1000", "1000"),
        (" The temperature drops to -5 degrees. The answer is -5.", "-5", "-5"),
        (" So 0.5 of 10 is 5.0", None, "5"),
        (" I don't know.", None, None),
        (" The answer is 42", None, "42"),
        (" 3 apples and then 7. The answer is 7.\n", "7", "7"),
    ],
)
def test_answer_extraction(generation, strict, flexible):
    assert strict_answer(generation) == strict
    assert last_number(generation) == flexible


@pytest.mark.parametrize(("raw", "normal"), [("1,000", "1000"), ("$18", "18"), ("18.", "18"), ("18.00", "18"), ("-3.50", "-3.5"), ("abc", "abc")])
def test_normalisation(raw, normal):
    assert normalize_number(raw) == normal


def test_gold_is_the_number_after_hashes():
    assert gsm8k_gold("Step one.\n#### 1,234") == "1234"
    with pytest.raises(ValueError):
        gsm8k_gold("no final line")


def test_majority_vote_prefers_the_most_common_then_the_first():
    from evalharness.shapes.short_answer import majority as _majority

    assert _majority(["3", "4", "4", None]) == "4"
    assert _majority(["3", "4"]) == "3"
    assert _majority([None, None]) is None


@pytest.mark.parametrize("model", [TINY_LLAMA, STORIES], ids=["tiny-random-llama2", "stories260K"])
def test_cli_end_to_end(tmp_path, model):
    extra = ["--model-args", "eos_token_id=1"] if model == STORIES else []
    proc = run_cli("run", "--model", str(model), "--tasks", "gsm8k", "--limit", "20", "--data-dir", str(DATA),
                   "--output", str(tmp_path), "--device", "cpu", "--gen-kwargs", "max_new_tokens=48", *extra)
    assert proc.returncode == 0, proc.stderr
    assert "exact_match_strict" in proc.stdout and "exact_match_flexible" in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    gsm = results["tasks"]["gsm8k"]
    assert gsm["n"] == 20 and gsm["num_fewshot"] == 8
    assert results["config"]["gen_kwargs"] == {"max_new_tokens": 48}
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 20
    first = samples[0]
    assert isinstance(first["output"], str)
    assert set(first["extracted"]) == {"strict", "flexible"}
    assert first["metrics"]["exact_match_flexible"] == float(first["prediction"]["flexible"] == first["gold"])
    if model == STORIES:
        assert gsm["truncated_documents"] == 20  # 8-shot prompts overflow its 512 tokens
    else:
        assert gsm["truncated_documents"] == 0


def test_unknown_gen_kwarg_is_one_line_error():
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "gsm8k", "--data-dir", str(DATA),
                   "--gen-kwargs", "temprature=0.5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "did you mean: temperature" in proc.stderr
