"""MATH (Minerva 4-shot), BBH (3-shot CoT) and AGIEval (English, few-shot) on the real data."""

from __future__ import annotations

import ast
import csv
import gzip
import json
import shutil

import pytest

from evalharness.core.errors import DataError, EvalHarnessError
from evalharness.core.prompt_render import PromptRenderer
from evalharness.core.task import Task
from evalharness.core.task_selection import resolve
from evalharness.data.source import DataSource
from evalharness.shapes.answer_extraction import after_the_answer_is, answer_form_match
from evalharness.shapes.math_answers import math_equivalent, minerva_answer, normalize_final_answer
from tests.conftest import DATA, TINY_LLAMA, run_cli


def task_named(name: str) -> Task:
    (selection,) = resolve([name])
    return selection.task


def first_prompt(name: str, subtask: str, data_dir=DATA) -> str:
    task, data = task_named(name), DataSource(data_dir)
    doc = task.documents(data, subtask)[0]
    shots = task.select_fewshot(task.fewshot_pool(data, subtask), task.default_fewshot, doc, 0)
    return PromptRenderer().build(task, doc, shots).text


# --- exact prompts ----------------------------------------------------------------------------


def test_math_prompt_is_minervas():
    lines = (DATA / "math" / "minerva_4shot_exemplars.jsonl").read_text().splitlines()
    exemplars = [json.loads(line) for line in lines]
    first = json.loads(gzip.open(DATA / "math" / "test.jsonl.gz", "rt").readline())
    expected = "".join(
        f"Problem:\n{e['problem']}\n\nSolution:\n{e['solution']}\n"
        f"Final Answer: The final answer is ${e['answer']}$. I hope it is correct.\n\n"
        for e in exemplars
    )
    expected += f"Problem:\n{first['problem']}\n\nSolution:"
    assert first_prompt("math", "math_algebra") == expected
    assert expected.startswith("Problem:\nFind the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.}")
    assert "Final Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.\n\nProblem:\nHow many" in expected


def test_bbh_prompt_is_the_official_cot_prompt():
    for name in ("boolean_expressions", "sports_understanding", "snarks"):
        cot = (DATA / "bbh" / "cot-prompts" / f"{name}.txt").read_text().split("-----\n", 1)[1].rstrip("\n")
        question = json.loads((DATA / "bbh" / "bbh" / f"{name}.json").read_text())["examples"][0]["input"]
        assert first_prompt("bbh", f"bbh_{name}") == f"{cot}\n\nQ: {question}\nA: Let's think step by step."


def test_agieval_prompt_is_the_authors_few_shot_format():
    text = first_prompt("agieval", "agieval_lsat_ar")
    assert text.startswith("Here are the answers for the problems in the exam.\nProblem 1.   ")
    assert text.count("\nChoose from the following options:    (A)") == 4
    rows = list(csv.reader((DATA / "agieval" / "few_shot_prompts.csv").open(encoding="utf-8")))
    column = rows[0].index("lsat-ar")
    shots = [ast.literal_eval(rows[r][column]) for r in (1, 3, 5)]
    test = json.loads((DATA / "agieval" / "v1" / "lsat-ar.jsonl").read_text().splitlines()[0])
    expected = "Here are the answers for the problems in the exam.\n"
    for i, s in enumerate(shots, start=1):
        expected += (f"Problem {i}.   {s['passage'] or ''} {s['question']}\nChoose from the following options:    "
                     f"{' '.join(s['options'])}\nThe answer is therefore {s['label']}\n\n")
    expected += (f"Problem 4.   {test['passage'] or ''} {test['question']}\nChoose from the following options:    "
                 f"{' '.join(test['options'])}\nThe answer is therefore")
    assert text == expected


def test_agieval_sat_en_without_passage_drops_exemplar_passages():
    text = first_prompt("agieval", "agieval_sat_en_without_passage")
    with_passage = first_prompt("agieval", "agieval_sat_en")
    assert len(text) < len(with_passage) // 3
    assert text.startswith("Here are the answers for the problems in the exam.\nProblem 1.    ")


# --- MATH equivalence -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "reference", "equal"),
    [
        ("$24$", "24", True),
        ("\\frac{1}{2}", "0.5", True),
        ("\\dfrac{1}{2}", "\\frac12", True),
        ("\\tfrac{3}{4}", "\\frac{3}{4}", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
        ("30^\\circ", "30", True),
        ("90^{\\circ}", "90", True),
        ("\\$18.90", "18.90", True),
        ("5\\text{ cm}", "5", True),
        ("12 \\text{ inches}", "12", True),
        ("\\text{(C)}", "(C)", True),
        ("10,000", "10000", True),
        ("x = -3", "-3", True),
        ("\\sqrt2", "\\sqrt{2}", True),
        ("\\boxed{7}", "7", True),
        ("[2,5)", "[2,5)", True),
        ("\\frac{2}{3}", "\\frac{3}{2}", False),
        ("[2,5]", "[2,5)", False),
        ("-5", "5", False),
        ("\\sqrt{3}", "3", False),
    ],
)
def test_math_equivalence(prediction, reference, equal):
    assert math_equivalent(prediction, [reference]) == float(equal)


def test_math_no_answer_scores_zero_and_gold_is_last_box():
    assert math_equivalent(None, ["3"]) == 0.0
    assert normalize_final_answer("\\$1,000") == "1000"
    doc = task_named("math").documents(DataSource(DATA), "math_algebra")[0]
    assert doc.fields["gold"] == "2" and doc.fields["level"] == "Level 3"


@pytest.mark.parametrize(
    ("generation", "answer"),
    [
        ("So $x=2$.\nFinal Answer: The final answer is $2$. I hope it is correct.", "$2$"),
        ("We get $\\boxed{\\frac{1}{2}}$.\nFinal Answer: The final answer is $\\frac{1}{2}$", "$\\frac{1}{2}$"),
        ("Final Answer: The final answer is 3.5.\n", "3.5"),
        ("So the area is $\\boxed{4\\pi}$ square units.", "4\\pi"),
        ("I cannot solve this.", None),
    ],
)
def test_minerva_answer_extraction(generation, answer):
    assert minerva_answer(generation) == answer


# --- BBH answer extraction per task type ------------------------------------------------------


@pytest.mark.parametrize(
    ("generation", "target", "correct"),
    [
        (" ... = not True = False. So the answer is False.\n", "False", True),  # boolean_expressions
        (" Lena caused it. So the answer is Yes.", "Yes", True),  # causal_judgement, navigate, web_of_lies
        (" Touchdown is football. So the answer is no.", "no", True),  # sports_understanding
        (" So the answer is invalid.", "valid", False),  # formal_fallacies
        (" So the answer is valid.", "valid", True),
        (" That is 12/14/1937. So the answer is (D).", "(D)", True),  # multiple choice
        (" So the answer is (D) 12/14/1937.", "(D)", True),
        (" So the answer is D.", "(D)", True),
        (" So the answer is (C).", "(D)", False),
        (" 1 + 7 = 8. So the answer is 8.", "8", True),  # object_counting
        (" = -219. So the answer is -219.", "-219", True),  # multistep_arithmetic_two
        (" So the answer is 219.", "-219", False),
        (' So, we need "}", "]", ">". So the answer is } ] >.', "} ] >", True),  # dyck_languages
        (" So the answer is arson aspect census.", "arson aspect census", True),  # word_sorting
        (" So the answer is aspect arson census.", "arson aspect census", False),
        (" I am not sure.", "(A)", False),
    ],
)
def test_bbh_answer_extraction(generation, target, correct):
    assert answer_form_match(after_the_answer_is(generation), [target]) == float(correct)


def test_bbh_takes_the_first_answer_line():
    assert after_the_answer_is(" So the answer is (A).\n\nQ: next\nA: So the answer is (B).") == "(A)"


# --- AGIEval few-shot counts ------------------------------------------------------------------


def test_agieval_uses_all_the_authors_exemplars():
    task, data = task_named("agieval"), DataSource(DATA)
    expected = {"aqua_rat": 5, "sat_math": 5, "logiqa_en": 3, "lsat_ar": 3, "lsat_lr": 3, "lsat_rc": 3,
                "sat_en": 3, "sat_en_without_passage": 3}
    assert {s.removeprefix("agieval_"): len(task.fewshot_pool(data, s)) for s in task.subtasks()} == expected
    doc = task.documents(data, "agieval_aqua_rat")[0]
    assert doc.fields["number"] == 6 and len(task.documents(data, "agieval_aqua_rat")) == 254
    with pytest.raises(EvalHarnessError, match="--num-fewshot 1 is not supported"):
        task.select_fewshot(task.fewshot_pool(data, "agieval_aqua_rat"), 1, doc, 0)


def test_groups_and_subtasks():
    names = {s.task.name: len(s.subtasks) for s in resolve(["math", "bbh", "agieval"])}
    assert names == {"math": 7, "bbh": 27, "agieval": 8}


# --- malformed data: one line naming the file and the line ------------------------------------


def copy_data(tmp_path, folder):
    shutil.copytree(DATA / folder, tmp_path / folder)
    return tmp_path


def test_malformed_math_row(tmp_path):
    root = copy_data(tmp_path, "math")
    lines = gzip.open(root / "math" / "test.jsonl.gz", "rt").read().splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), "solution": "no box here"})
    with gzip.open(root / "math" / "test.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        task_named("math").documents(DataSource(root), "math_algebra")
    message = str(info.value)
    assert "test.jsonl.gz" in message and "record 3" in message and "\\boxed{}" in message and "\n" not in message


def test_malformed_agieval_row(tmp_path):
    root = copy_data(tmp_path, "agieval")
    path = root / "agieval" / "v1" / "lsat-ar.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "label": "Z"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"lsat-ar\.jsonl, (line|record) 2: label 'Z'"):
        task_named("agieval").documents(DataSource(root), "agieval_lsat_ar")


def test_malformed_bbh_prompt_and_row(tmp_path):
    root = copy_data(tmp_path, "bbh")
    (root / "bbh" / "cot-prompts" / "navigate.txt").write_text("no separator line\n")
    with pytest.raises(DataError, match=r"navigate\.txt: no '-----' line"):
        task_named("bbh").fewshot_pool(DataSource(root), "bbh_navigate")
    path = root / "bbh" / "bbh" / "snarks.json"
    document = json.loads(path.read_text())
    del document["examples"][4]["target"]
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=r"snarks\.json, record 5: missing field 'target'"):
        task_named("bbh").documents(DataSource(root), "bbh_snarks")


# --- end to end -------------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path):
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "math,bbh,agieval", "--limit", "2",
                   "--data-dir", str(DATA), "--output", str(tmp_path), "--device", "cpu",
                   "--gen-kwargs", "max_new_tokens=8")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())["tasks"]
    math, bbh, agieval = results["math"], results["bbh"], results["agieval"]
    assert math["n"] == 14 and math["num_fewshot"] == 4 and len(math["subtasks"]) == 7
    assert set(math["groups"]) <= {f"level_{i}" for i in range(1, 6)} and "exact_match" in math["metrics"]
    assert bbh["n"] == 54 and len(bbh["subtasks"]) == 27 and bbh["num_fewshot"] == 3
    means = [s["exact_match"]["value"] for s in bbh["subtasks"].values()]
    assert bbh["metrics"]["exact_match"]["value"] == pytest.approx(sum(means) / 27)
    assert agieval["n"] == 16 and len(agieval["subtasks"]) == 8
    assert agieval["fewshot_per_subtask"]["agieval_aqua_rat"] == 5
    assert agieval["fewshot_per_subtask"]["agieval_lsat_rc"] == 3
    for name in ("math", "bbh", "agieval"):
        assert name in proc.stdout
