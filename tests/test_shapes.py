"""The shared benchmark shapes and declared datasets, on hand-made documents and real files."""

from __future__ import annotations

import gzip
import json

import pytest

from evalharness.core.errors import DataError, EvalHarnessError
from evalharness.core.requests import GenerateResponse, LoglikelihoodResponse
from evalharness.core.task import Doc, Prompt
from evalharness.data.adapters import AnswerMaps, CsvTable
from evalharness.data.datasets import CsvRows, Dataset, JsonDocument, JsonLines, LabelFile, TextLines, TsvRows
from evalharness.data.source import DataSource
from evalharness.shapes import answer_extraction as ax
from evalharness.shapes.multiple_choice import MultipleChoice, PartialScoring, labelled_choices
from evalharness.shapes.short_answer import ShortAnswer, majority, pass_at_k
from tests.conftest import DATA


def ll(*values: float) -> list[LoglikelihoodResponse]:
    return [LoglikelihoodResponse(v, False, 1) for v in values]


class Choice(MultipleChoice):
    name, version, template = "choice_test", "0", "unused.jinja"
    metrics = ("acc", "acc_norm", "acc_calibrated")


PROMPT = Prompt("Q: which?\nAnswer:", 17, "h", ())


def test_multiple_choice_requests_and_acc_vs_acc_norm():
    doc = Doc("t", 0, {"choices": ["a cat", "an elephant"], "answer": 1})
    requests = Choice().requests(doc, PROMPT)
    assert [(r.context, r.continuation) for r in requests] == [
        (PROMPT.text, " a cat"), (PROMPT.text, " an elephant"),  # conditional
        ("Answer:", " a cat"), ("Answer:", " an elephant"),  # calibration (Llama 1: OBQA, BoolQ)
    ]
    # "a cat" is likelier in total, "an elephant" per character; calibration prefers the second too.
    outcome = Choice().score(doc, ll(-5.0, -8.0, -2.0, -9.0))
    assert outcome.metrics == {"acc": 0.0, "acc_norm": 1.0, "acc_calibrated": 1.0}
    assert outcome.prediction == 0 and outcome.extra["prediction_norm"] == 1


def test_mc2_and_unknown_metric():
    class Mass(MultipleChoice):
        name, version, template = "mass", "0", "x"
        metrics = ("mc2",)

    doc = Doc("t", 0, {"choices": ["x", "y", "z"], "labels": [1, 1, 0], "answer": 0})
    outcome = Mass().score(doc, ll(0.0, 0.0, 0.0))
    assert outcome.metrics["mc2"] == pytest.approx(2 / 3)
    with pytest.raises(TypeError, match="unknown multiple-choice metric"):
        type("Bad", (MultipleChoice,), {"metrics": ("accuracy",)})


class Blank(PartialScoring):
    """WinoGrande-style: the option fills the blank; the shared rest of the sentence is scored."""

    name, version, template = "blank", "0", "x"

    def option_contexts(self, doc: Doc) -> list[str]:
        before = doc.fields["sentence"].split("_")[0]
        return [before + option for option in doc.fields["options"]]

    def shared_continuation(self, doc: Doc) -> str:
        return doc.fields["sentence"].split("_")[1].strip()


def test_partial_scoring_substitutes_each_option_and_scores_the_shared_suffix():
    doc = Doc("t", 0, {"sentence": "The trophy didn't fit because _ was too big.", "options": ["the trophy", "the case"], "answer": 0})
    prompt = Prompt("EXAMPLE\n\nThe trophy didn't fit because the trophy", 40, "h", (1,))
    requests = Blank().requests(doc, prompt)
    head = prompt.text[: len(prompt.text) - 40]
    assert [(r.context, r.continuation) for r in requests] == [
        (head + "The trophy didn't fit because the trophy", " was too big."),
        (head + "The trophy didn't fit because the case", " was too big."),
    ]
    assert requests[1].protected_chars == len("The trophy didn't fit because the case")
    assert Blank().score(doc, ll(-3.0, -2.0)).metrics == {"acc": 0.0}
    assert Blank().target(doc) == "was too big."


def test_extraction_and_comparison():
    assert ax.boxed(r"so \boxed{\frac{1}{2}} and \boxed{3}") == "3"
    assert ax.boxed(r"\boxed{\frac{a}{b}}") == r"\frac{a}{b}"
    assert ax.first_line("  Paris\nQ: next") == "Paris"
    assert ax.normalize_text("The  Eiffel Tower!") == "eiffel tower"
    assert ax.normalize_text("Jean-Paul") == "jeanpaul"  # SQuAD drops punctuation, no space
    assert ax.exact_match("the Beatles.", ["Beatles", "The Fab Four"]) == 1.0
    assert ax.exact_match(None, ["x"]) == 0.0
    assert ax.token_f1("the big red dog", ["red dog"]) == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert ax.token_f1("", [""]) == 1.0  # unanswerable, abstained
    assert ax.token_f1("something", [""]) == 0.0
    assert ax.numeric_match("1,000.00", ["1000"]) == 1.0


def test_majority_and_pass_at_k():
    assert majority(["3", None, "4", "4"]) == "4"
    assert majority(["3", "4"]) == "3"  # ties: the first sample
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - (3 / 4) * (2 / 3))


class Trivia(ShortAnswer):
    name, version, template = "trivia", "0", "x"

    def references(self, doc: Doc) -> list[str]:
        return list(doc.fields["aliases"])


def test_short_answer_scores_majority_and_pass_at_k():
    task = Trivia(samples=3, pass_at=2)
    doc = Doc("t", 0, {"aliases": ["Paris", "Paris, France"]})
    requests = task.requests(doc, Prompt("Q: capital of France?\nA:", 5, "h", ()))
    assert len(requests) == 3 and requests[0].stop == ("\n",)
    gens = [GenerateResponse(t, 2, "stop") for t in (" paris\nQ:", " Lyon", " Paris")]
    outcome = task.score(doc, gens)
    assert outcome.prediction == "paris"
    assert outcome.metrics["exact_match"] == 1.0
    assert outcome.metrics["exact_match_pass@2"] == pytest.approx(1 - (1 / 3) * 0)  # 2 of 3 correct


@pytest.mark.parametrize("options, word", [({"samples": "abc"}, "samples"), ({"samples": 0}, "samples"),
                                           ({"samples": -2}, "samples"), ({"max_new_tokens": 0}, "max_new_tokens"),
                                           ({"samples": 1, "pass_at": 2}, "pass_at")])
def test_bad_task_options_are_one_line_errors(options, word):
    with pytest.raises(EvalHarnessError, match=word):
        Trivia(**options)


# --- declared datasets: local adapters on real files -----------------------------------------


def test_tsv_rows_read_openbookqa():
    records = TsvRows("openbookqa/{split}.tsv").read(DataSource(DATA), "test", None)
    assert len(records) == 500 and records[0]["Answer Key"] in "ABCD" and "Question Stem" in records[0]


def test_label_file_beside_jsonl_reads_piqa():
    adapter = JsonLines("piqa/{split}.jsonl", ("goal", "sol1", "sol2"), labels=LabelFile("piqa/{split}-labels.lst"))
    records = adapter.read(DataSource(DATA), "dev", None)
    assert len(records) == 1838 and {r["label"] for r in records} == {0, 1}


def test_label_count_mismatch_names_both_files(tmp_path):
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "dev.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n' * 3)
    (tmp_path / "piqa" / "dev-labels.lst").write_text("0\n1\n")
    adapter = JsonLines("piqa/{split}.jsonl", labels=LabelFile("piqa/{split}-labels.lst"))
    with pytest.raises(DataError, match=r"dev-labels.lst: 2 labels for the 3 records of .*dev.jsonl"):
        adapter.read(DataSource(tmp_path), "dev", None)


def test_gzip_jsonl_and_json_document(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "rows.jsonl.gz").write_bytes(gzip.compress(b'{"q": 1}\n{"q": 2}\n'))
    assert JsonLines("x/rows.jsonl.gz").read(DataSource(tmp_path), "test", None) == [{"q": 1}, {"q": 2}]
    (tmp_path / "x" / "doc.json").write_text(json.dumps({"data": [{"q": [1, 2]}]}))
    adapter = JsonDocument("x/doc.json", lambda d: [{"q": q} for item in d["data"] for q in item["q"]])
    assert adapter.read(DataSource(tmp_path), "test", None) == [{"q": 1}, {"q": 2}]


def test_csv_rows_errors_name_file_and_line(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a_test.csv").write_text("q,1,2,3,4,A\nq,1,2,3,4,E\n")

    def mapper(row: list[str]) -> dict[str, str]:
        if row[5] not in "ABCD":
            raise ValueError(f"answer {row[5]!r} is not A-D")
        return {"q": row[0]}

    with pytest.raises(DataError, match=r"a_test.csv, line 2: answer 'E' is not A-D"):
        CsvRows("m/{subset}_{split}.csv", 6, mapper).read(DataSource(tmp_path), "test", "a")


def test_text_lines_reject_an_empty_line(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "f.txt.gz").write_bytes(gzip.compress(b"one\n\nthree\n"))
    with pytest.raises(DataError, match=r"f.txt.gz, line 2: empty line"):
        TextLines("p/{subset}").read(DataSource(tmp_path), "prompts", "f.txt.gz")


def test_dataset_without_a_local_copy_says_it_loads_from_the_hub(tmp_path):
    quac = Dataset("allenai/quac", None, "validation")
    with pytest.raises(DataError, match="no local copy.*loads from the hub"):
        quac.records(DataSource(tmp_path), "validation")


def test_local_only_dataset_offline_gives_its_hint_instead_of_asking_the_hub(monkeypatch):
    monkeypatch.delenv("EVALHARNESS_DATA_DIR", raising=False)
    prompts = Dataset("", None, "prompts", TextLines("p/{subset}"), offline_hint="prompts are local files; pass --data-dir")
    with pytest.raises(DataError, match=r"^prompts are local files; pass --data-dir$"):
        prompts.records(DataSource(), "prompts", "f.txt")


def test_csv_table_renames_columns_splits_lists_and_names_bad_rows(tmp_path):
    (tmp_path / "t").mkdir()
    table = CsvTable("t/q.csv", {"Question": "question", "Answers": "answers"}, lists=("answers",))
    (tmp_path / "t" / "q.csv").write_text("\ufeffQuestion,Answers\nWhy?,a; b;; c \n", "utf-8")
    assert table.read(DataSource(tmp_path), "validation", None) == [{"question": "Why?", "answers": ["a", "b", "c"]}]
    for body, error in (("Question,Answers\nWhy?, ; \n", r"q.csv, line 2: no items in answers"),
                        ("Question,Answers\nWhy?,a\nQuestion,Answers\n", r"q.csv, line 3: the header row appears twice"),
                        ("Q,Answers\nWhy?,a\n", r"q.csv: expected the header Question,Answers")):  # fmt: skip
        (tmp_path / "t" / "q.csv").write_text(body, "utf-8")
        with pytest.raises(DataError, match=error):
            table.read(DataSource(tmp_path), "validation", None)


def test_answer_maps_and_labelled_choices(tmp_path):
    (tmp_path / "mc.json").write_text(json.dumps([{"question": "q", "other": 1, "t": {"x": 0, "y": 1, "z": 1}}]))
    (record,) = JsonDocument("mc.json", AnswerMaps(("question",), ("t",))).read(DataSource(tmp_path), "validation", None)
    assert record == {"question": "q", "t": {"choices": ["x", "y", "z"], "labels": [0, 1, 1]}}
    assert labelled_choices(record["t"], "t", single_true=False) == {"choices": ["x", "y", "z"], "labels": [0, 1, 1], "answer": 1}
    with pytest.raises(ValueError, match="t must have exactly one true answer"):
        labelled_choices(record["t"], "t", single_true=True)
    with pytest.raises(ValueError, match="t needs answers labelled 0/1"):
        labelled_choices({"choices": ["x"], "labels": [2]}, "t", single_true=False)
    (tmp_path / "mc.json").write_text(json.dumps({"question": "q"}))
    with pytest.raises(DataError, match="mc.json: unexpected structure .expected a JSON list"):
        JsonDocument("mc.json", AnswerMaps(("question",), ("t",))).read(DataSource(tmp_path), "validation", None)


def test_last_block_chars_protects_the_test_item_after_a_primer():
    text = "Q: a?\nA: b.\n\nQ: c?\nA: d.\n\nQ: test?\nA:"
    assert Prompt(text, len(text), "h", ()).last_block_chars("Q: ") == len("Q: test?\nA:")
    assert Prompt(text, 5, "h", ()).last_block_chars("Q: ") == 5  # never more than the document
    assert Prompt(text, len(text), "h", ()).last_block_chars("Question: ") == len(text)  # none: the document
