"""MMLU renders exactly the card's prompt, and reads the data as text."""

from __future__ import annotations

import pytest

from evalharness.core.errors import EvalHarnessError
from evalharness.core.prompt_render import PromptRenderer
from evalharness.core.task_selection import resolve
from evalharness.data.source import DataSource
from tests.conftest import DATA

EXPECTED_FIRST_ABSTRACT_ALGEBRA = (
    "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n"
    "Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H and K"
    " are subgroups of G then HK is a subgroup of G.\nA. True, True\nB. False, False\nC. True, False\n"
    "D. False, True\nAnswer: B\n\n"
    "Statement 1 | Every element of a group generates a cyclic subgroup of the group. Statement 2 | The"
    " symmetric group S_10 has 10 elements.\nA. True, True\nB. False, False\nC. True, False\n"
    "D. False, True\nAnswer: C\n\n"
    "Statement 1| Every function from a finite set onto itself must be one to one. Statement 2 | Every"
    " subgroup of an abelian group is abelian.\nA. True, True\nB. False, False\nC. True, False\n"
    "D. False, True\nAnswer: A\n\n"
    "Find the characteristic of the ring 2Z.\nA. 0\nB. 3\nC. 12\nD. 30\nAnswer: A\n\n"
    "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
    "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
)


def _prompt(subtask: str, doc_id: int, shots: int = 5, **options: object):
    (selection,) = resolve([subtask], options)
    task, data = selection.task, DataSource(DATA)
    doc = task.documents(data, subtask)[doc_id]
    pool = task.fewshot_pool(data, subtask)
    return task, doc, PromptRenderer().build(task, doc, task.select_fewshot(pool, shots, doc, 0))


def test_first_abstract_algebra_prompt_is_exact():
    _, _, prompt = _prompt("mmlu_abstract_algebra", 0)
    assert prompt.text == EXPECTED_FIRST_ABSTRACT_ALGEBRA
    assert prompt.shots == (0, 1, 2, 3, 4)
    # The protected tail is exactly the test question.
    assert prompt.text[-prompt.document_chars :].startswith("Find the degree")


def test_spelling_options_give_lm_evals_and_hendrycks_prompts():
    # world_religions' questions start with a space in the CSV: kept by default (as the Hendrycks
    # code does), stripped by lm-eval; the header's double space is the Hendrycks code's.
    _, _, default = _prompt("mmlu_world_religions", 0)
    assert "religions.\n\n What is the sign" in default.text
    _, _, stripped = _prompt("mmlu_world_religions", 0, strip_questions="true")
    assert "religions.\n\nWhat is the sign" in stripped.text
    assert "\n\n " not in stripped.text
    task, _, hendrycks = _prompt("mmlu_world_religions", 0, hendrycks_header=True)
    assert hendrycks.text.startswith("The following are multiple choice questions (with answers) about  world religions.\n\n")
    assert hendrycks.text.replace("about  world", "about world", 1) == default.text
    assert task.config()["options"] == {"strip_questions": False, "hendrycks_header": True}


def test_spelling_option_is_checked():
    with pytest.raises(EvalHarnessError, match="strip_questions='maybe'"):
        _prompt("mmlu_anatomy", 0, strip_questions="maybe")


def test_literal_none_option_stays_text():
    task, doc, prompt = _prompt("mmlu_electrical_engineering", 41, shots=0)
    assert doc.fields["choices"][3] == "None"
    assert "\nD. None\nAnswer:" in prompt.text
    assert task.target(doc) == "B"


def test_same_exemplars_for_every_question_of_a_subject():
    _, _, first = _prompt("mmlu_anatomy", 0)
    _, _, later = _prompt("mmlu_anatomy", 17)
    split = first.text.rindex("\n\n") + 2
    assert first.text[:split] == later.text[:split]
    assert first.text.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")


def test_subject_counts_and_categories_match_the_protocol():
    from evalharness.tasks.mmlu import SUBJECTS, subject_of

    (selection,) = resolve(["mmlu"])
    data = DataSource(DATA)
    per_category: dict[str, int] = {}
    total = 0
    for subtask in selection.subtasks:
        n = len(selection.task.documents(data, subtask))
        per_category[SUBJECTS[subject_of(subtask)]] = per_category.get(SUBJECTS[subject_of(subtask)], 0) + n
        total += n
    assert len(selection.subtasks) == 57
    assert total == 14042
    assert per_category == {"humanities": 4705, "stem": 3153, "social_sciences": 3077, "other": 3107}
