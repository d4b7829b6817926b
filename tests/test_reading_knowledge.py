"""Reading comprehension (BoolQ, SQuAD 2.0, QuAC) and world knowledge (NQ-open, TriviaQA), on the
real files in ../shared/data and the real tiny model; the card's groups as --tasks names."""

from __future__ import annotations

import gzip
import json
import logging

import pytest

from evalharness.core.errors import DataError, EvalHarnessError
from evalharness.core.prompt_render import PromptRenderer
from evalharness.core.task_selection import _expand_groups, group_names, resolve
from evalharness.data.source import DataSource
from evalharness.shapes.answer_extraction import exact_match, token_f1
from tests.conftest import DATA, TINY_LLAMA, run_cli

SOURCE = DataSource(str(DATA))


def first_prompt(name: str, data: DataSource = SOURCE) -> tuple[str, dict]:
    (selection,) = resolve([name])
    task = selection.task
    doc = task.documents(data, name)[0]
    pool = task.fewshot_pool(data, name) if task.default_fewshot else []
    shots = task.select_fewshot(pool, task.default_fewshot, doc, 1234)
    return PromptRenderer().build(task, doc, shots).text, dict(doc.fields)


def test_boolq_prompt_and_gold():
    row = json.loads((DATA / "boolq" / "validation.jsonl").read_text().splitlines()[0])
    text, fields = first_prompt("boolq")
    assert text == f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:"
    assert row["question"] == "does ethanol take more energy make that produces"
    assert fields["answer"] == 0  # False → " no"


def test_squad_v2_prompt_first_document():
    text, fields = first_prompt("squad_v2")
    official = json.loads(gzip.decompress((DATA / "squad_v2" / "dev-v2.0.no-offsets.json.gz").read_bytes()))
    paragraph = official["data"][0]["paragraphs"][0]
    assert text == (f"Title: Normans\n\nBackground: {paragraph['context']}\n\n"
                    "Question: In what country is Normandy located?\n\nAnswer:")
    assert fields["answers"] == ["France"] * 4


def test_nq_open_prompt_is_the_llama_papers_5_shot_format():
    text, _ = first_prompt("nq_open")
    assert text == (
        "Answer these questions:\n"
        "Q: who sings does he love me with reba?\nA: Linda Davis\n"
        "Q: how many pages is invisible man by ralph ellison?\nA: 581 (second edition)\n"
        "Q: where do the great lakes meet the ocean?\nA: the Saint Lawrence River\n"
        "Q: when does the new my hero academia movie come out?\nA: July 5, 2018\n"
        "Q: what is the smallest prime number that is greater than 30?\nA: 31\n"
        "Q: when was the last time anyone was on the moon?\nA:"
    )


def test_triviaqa_prompt_shows_a_typical_alias_and_scores_every_alias():
    text, fields = first_prompt("triviaqa")
    assert text == (
        "Answer these questions:\n"
        "Q: The VS-300 was a type of what?\nA: Helicopter\n"
        "Q: What are the international registration letters of a vehicle from Belize?\nA: Bh.\n"
        "Q: Ezzard Charles was a world champion in which sport?\nA: Boxing\n"
        "Q: In which city were Rotary Clubs set up in 1905?\nA: Chicago\n"
        "Q: What was the first movie western called?\nA: Christopher Carson\n"
        "Q: Which Lloyd Webber musical premiered in the US on 10th December 1993?\nA:"
    )
    assert "Sunset Blvd" in fields["aliases"] and "sunset boulevard" in fields["aliases"]


@pytest.mark.parametrize(
    ("prediction", "references", "em", "f1"),
    [
        ("The Beatles", ["Beatles"], 1.0, 1.0),  # article
        ("beatles!", ["The Beatles."], 1.0, 1.0),  # punctuation and case
        ("  Sunset   Boulevard \t", ["sunset boulevard"], 1.0, 1.0),  # whitespace
        ("Sunset Blvd", ["Sunset Boulevard", "Sunset Blvd."], 1.0, 1.0),  # any alias
        ("in the 10th century", ["10th and 11th centuries"], 0.0, 2 / 7),  # P 1/3, R 1/4
        ("France", ["Paris"], 0.0, 0.0),
        ("", [""], 1.0, 1.0),  # unanswerable, model abstains
        ("Rollo", [""], 0.0, 0.0),  # unanswerable, model answers
        ("", ["France"], 0.0, 0.0),  # answerable, model abstains
        (None, ["France"], 0.0, 0.0),  # nothing extracted
        ("a an the", [""], 1.0, 1.0),  # only articles: normalises to the empty answer
    ],
)
def test_exact_match_and_squad_f1(prediction, references, em, f1):
    assert exact_match(prediction, references) == em
    assert token_f1(prediction, references) == pytest.approx(f1)


def test_squad_v2_reads_unanswerable_as_the_empty_answer():
    from evalharness.tasks.squad_v2 import no_answer_as_empty

    assert no_answer_as_empty(" Unanswerable.\nQuestion: …") == ""
    assert no_answer_as_empty("\n") == ""
    assert no_answer_as_empty(" France\n") == "France"


def test_a_malformed_row_is_a_one_line_error_naming_file_and_line(tmp_path):
    (tmp_path / "boolq").mkdir()
    good = json.dumps({"question": "q", "answer": True, "passage": "p"})
    (tmp_path / "boolq" / "validation.jsonl").write_text(f"{good}\n{json.dumps({'question': 'q', 'passage': 'p'})}\n")
    (selection,) = resolve(["boolq"])
    with pytest.raises(DataError) as err:
        selection.task.documents(DataSource(tmp_path), "boolq")
    message = str(err.value)
    assert "validation.jsonl, line 2: missing field(s) answer" in message and "\n" not in message
    bad = json.dumps({"question": "q", "answer": "yes", "passage": "p"})
    (tmp_path / "boolq" / "validation.jsonl").write_text(f"{good}\n{bad}\n")
    with pytest.raises(DataError, match=r"validation.jsonl, record 2: answer must be true or false"):
        selection.task.documents(DataSource(tmp_path), "boolq")


def test_quac_offline_is_a_clear_error_alone_and_skipped_in_its_group(caplog):
    (quac,) = resolve(["quac"], data=SOURCE)
    with pytest.raises(DataError, match="allenai/quac: no local copy.*QuAC is not available offline"):
        quac.task.documents(SOURCE, "quac")
    with caplog.at_level(logging.WARNING):
        assert _expand_groups(["reading_comprehension"], SOURCE) == ["squad_v2", "boolq"]
    assert "quac is not available offline" in caplog.text
    assert _expand_groups(["reading_comprehension"]) == ["squad_v2", "quac", "boolq"]  # online: all three
    assert "quac" not in _expand_groups(["llama2_card"], SOURCE)


def test_groups_come_from_the_card():
    assert {"commonsense", "world_knowledge", "reading_comprehension"} <= set(group_names())
    assert not {"mmlu", "math", "bbh"} & set(group_names())  # categories named like a task stay tasks
    assert _expand_groups(["world_knowledge"]) == ["nq_open", "triviaqa"]


def test_commonsense_runs_the_registered_members_and_warns_about_the_others(caplog, monkeypatch):
    from evalharness.core import task_selection

    monkeypatch.setattr(task_selection, "group_tasks", lambda g: ["boolq", "not_landed_yet"])
    with caplog.at_level(logging.WARNING):
        assert _expand_groups(["commonsense"]) == ["boolq"]
    assert "not_landed_yet not in this installation yet" in caplog.text
    monkeypatch.setattr(task_selection, "group_tasks", lambda g: ["not_landed_yet"])
    with pytest.raises(EvalHarnessError, match="none of its tasks"):
        _expand_groups(["commonsense"])


def test_cli_reading_and_knowledge_groups_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "run", "--model", str(TINY_LLAMA), "--tasks", "reading_comprehension,world_knowledge", "--limit", "5",
        "--data-dir", str(DATA), "--device", "cpu", "--no-cache", "--gen-kwargs", "max_new_tokens=4",
        "--output", str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "quac is not available offline" in result.stderr
    results = json.loads((out / "results.json").read_text())
    assert set(results["tasks"]) == {"squad_v2", "boolq", "nq_open", "triviaqa"}
    assert set(results["tasks"]["boolq"]["metrics"]) == {"acc", "acc_calibrated"}
    assert {"exact_match", "f1"} <= set(results["tasks"]["squad_v2"]["metrics"])
    assert results["tasks"]["triviaqa"]["num_fewshot"] == 5
    assert results["tasks"]["nq_open"]["fewshot_sampling"] == "first_n"
    assert "DPR's held-out" in results["tasks"]["nq_open"]["fewshot_note"]  # the Fewshot declaration's note
    report = run_cli("report", str(out), "--format", "md")
    assert report.returncode == 0, report.stderr
    rows = {line.split("|")[2].strip(): line for line in report.stdout.splitlines() if line.count("|") > 8}
    assert "not run" in rows["QuAC"]
    for label in ("SQuAD (v2.0)", "BoolQ", "NaturalQuestions", "TriviaQA (Wiki)"):
        assert "not run" not in rows[label] and "‡" not in rows[label]
    assert "partial (2 of 3" in report.stdout  # Reading Comprehension without QuAC


def test_quac_dialogue_becomes_one_document_per_question_with_its_history():
    from evalharness.core.task import Doc
    from evalharness.tasks.quac import as_cannot_answer, dialogue_questions

    record = {  # the hub's schema (allenai/quac), shortened
        "dialogue_id": "C_1", "wikipedia_page_title": "Ada Lovelace", "background": "A mathematician.",
        "section_title": "Early life", "context": "Ada was born in 1815. CANNOTANSWER",
        "questions": ["When was she born?", "Who was her tutor?"],
        "answers": {"texts": [["Ada was born in 1815.", "1815"], ["CANNOTANSWER"]], "answer_starts": [[0, 16], [23]]},
    }  # fmt: skip
    docs = dialogue_questions(record)
    assert [d["answers"] for d in docs] == [["Ada was born in 1815.", "1815"], ["CANNOTANSWER"]]
    (selection,) = resolve(["quac"])
    text = PromptRenderer().build(selection.task, Doc("quac", 1, docs[1]), []).text
    assert text == ("Title: Ada Lovelace\n\nBackground: A mathematician.\n\nSection: Early life\n\n"
                    "Passage: Ada was born in 1815.\n\nQ: When was she born?\nA: Ada was born in 1815.\n\n"
                    "Q: Who was her tutor?\nA:")
    assert as_cannot_answer("\n") == "CANNOTANSWER" and token_f1(as_cannot_answer(""), ["CANNOTANSWER"]) == 1.0


def test_json_lines_split_only_at_newlines(tmp_path):
    """U+0085 (NEL) inside a JSON string is text, not a line break (TriviaQA line 4330 has one)."""
    (tmp_path / "f.jsonl").write_text(json.dumps({"q": "Vicky Cristina M\x85."}, ensure_ascii=False) + "\r\n{}\n")
    assert DataSource(tmp_path).read_jsonl("f.jsonl") == [{"q": "Vicky Cristina M\x85."}, {}]
    (selection,) = resolve(["triviaqa"])
    assert len(selection.task.documents(SOURCE, "triviaqa")) == 7993
