"""The card's Commonsense Reasoning group: eight multiple-choice tasks on the real data in ../shared.

Prompts are lm-eval 0.4's, rendered exactly; scoring by log-likelihood (acc, acc_norm, and for
OpenBookQA the Llama 1 calibration); WinoGrande by partial scoring; CSQA 7-shot from Wei et al.'s
exemplars, marked approximate. One end-to-end CLI run covers all eight on tiny-random-llama2.
"""

from __future__ import annotations

import gzip
import json

import pytest

from evalharness.core.errors import DataError
from evalharness.core.prompt_render import PromptRenderer
from evalharness.core.requests import LoglikelihoodRequest, LoglikelihoodResponse
from evalharness.core.task import Doc
from evalharness.core.task_selection import resolve
from evalharness.data.datasets import TsvRows
from evalharness.data.source import DataSource
from evalharness.reporting.card import load_card
from evalharness.reporting.report import approximation
from evalharness.run.planning import plan
from evalharness.run.settings import RunConfig
from evalharness.shapes.multiple_choice import answer_index
from tests.conftest import DATA, TINY_LLAMA, run_cli

TASKS = ("piqa", "siqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa", "commonsense_qa")


def ll(*values: float) -> list[LoglikelihoodResponse]:
    return [LoglikelihoodResponse(v, False, 1) for v in values]


def task_of(name: str):
    (selection,) = resolve([name])
    return selection.task


@pytest.fixture(scope="module")
def first_docs():
    """The first planned document of every task, as a run would build it."""
    planned = plan(RunConfig(tasks=TASKS, limit=1), DataSource(DATA), PromptRenderer())
    return {p.selection.task.name: p for p in planned}


# --- the exact prompt and requests of each task's first document ----------------------------------

CSQA_SHOTS = (
    "Question: What do people use to absorb extra ink from a fountain pen?\nA. shirt pocket\n"
    "B. calligrapher's hand\nC. inkwell\nD. desk drawer\nE. blotter\nAnswer: E\n\n"
    "Question: What home entertainment equipment requires cable?\nA. radio shack\nB. substation\n"
    "C. television\nD. cabinet\nAnswer: C\n\n"
)
FIRST = {
    "piqa": ("Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:", [
        " Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you will"
        " also need to supply it with a water bottle and a food dish.",
        " Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, you will"
        " also need to supply it with a water bottle and a food dish."], 0),
    "siqa": ("Q: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy need to do before"
             " this?\nA:", [" make a new plan", " Go home and see Riley", " Find somewhere to go"], 2),
    "hellaswag": ("Roof shingle removal: A man is sitting on a roof. He", [
        " is using wrap to wrap a pair of skis.", " is ripping level tiles off.", " is holding a rubik's cube.",
        " starts pulling up roofing on a roof."], 3),
    "arc_easy": ("Question: Which statement best explains why photosynthesis is the foundation of most food webs?"
                 "\nAnswer:", [" Sunlight is the source of energy for nearly all ecosystems.",
                               " Most ecosystems are found on land instead of in water.",
                               " Carbon dioxide is more available than other gases.",
                               " The producers in all ecosystems are plants."], 0),
    "arc_challenge": ("Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is"
                      " the most likely effect of this increase in rotation?\nAnswer:", [
                          " Planetary density will decrease.", " Planetary years will become longer.",
                          " Planetary days will become shorter.", " Planetary gravity will become stronger."], 2),
    "openbookqa": ("A person wants to start saving money so that they can afford a nice vacation at the end of the"
                   " year. After looking over their budget and expenses, they decide the best way to save money is"
                   " to", [" make more phone calls", " quit eating lunch out", " buy less with monopoly money",
                           " have lunch with friends"], 1),
}


@pytest.mark.parametrize("name", sorted(FIRST))
def test_first_prompt_and_continuations_are_lm_evals(first_docs, name):
    prompt, continuations, gold = FIRST[name]
    item = first_docs[name]
    assert item.prompt.text == prompt and item.prompt.shots == ()
    conditional = [r for r in item.requests if isinstance(r, LoglikelihoodRequest) and r.context == prompt]
    assert [r.continuation for r in conditional] == continuations
    assert item.selection.task.gold(item.doc) == gold
    if name == "openbookqa":  # the calibration requests: each choice after "Answer:"
        assert [(r.context, r.continuation) for r in item.requests[4:]] == [("Answer:", c) for c in continuations]
    else:
        assert len(item.requests) == len(continuations)


def test_winogrande_scores_the_shared_continuation_under_each_option(first_docs):
    item = first_docs["winogrande"]
    head = "Sarah was a much better surgeon than Maria so "
    assert [(r.context, r.continuation) for r in item.requests] == [
        (head + "Sarah", " always got the easier cases."), (head + "Maria", " always got the easier cases."),
    ]
    assert item.requests[0].protected_chars == len(head + "Sarah")
    assert item.prompt.text == head + "Maria" and item.selection.task.gold(item.doc) == 1  # answer "2"
    outcome = item.selection.task.score(item.doc, ll(-9.0, -4.0))
    assert outcome.prediction == 1 and outcome.metrics == {"acc": 1.0, "acc_norm": 1.0}


def test_commonsense_qa_is_7_shot_from_wei_et_al_answers_only(first_docs):
    item = first_docs["commonsense_qa"]
    assert item.prompt.shots == (0, 1, 2, 3, 4, 5, 6)
    assert item.prompt.text.startswith(CSQA_SHOTS)
    assert "rationale" not in item.prompt.text and "So the answer" not in item.prompt.text
    assert item.prompt.text.endswith(
        "\n\nQuestion: A revolving door is convenient for two direction travel, but it also serves as a security"
        " measure at a what?\nA. bank\nB. library\nC. department store\nD. mall\nE. new york\nAnswer:"
    )
    assert item.prompt.text.count("Question:") == 8 and item.prompt.text.count("\nAnswer: ") == 7
    assert [r.continuation for r in item.requests] == [" A", " B", " C", " D", " E"]
    config = item.selection.task.config()
    assert config["approximate"] is True and "Wei et al." in config["approximation"]
    assert "Wei et al." in approximation(config)  # how the report reads it


def test_hellaswag_wikihow_markers_are_removed_as_lm_eval_does():
    task = task_of("hellaswag")
    fields = task.record_to_doc({
        "activity_label": "Personal Care and Style", "ctx_a": "[header] How to dress [title] Pick a shirt.",
        "ctx_b": "you", "endings": ["[substeps] Wear it.", "x [title] y", "a  b", "[step] Go."], "label": "2",
    })
    assert fields["query"] == "Personal Care and Style: How to dress. Pick a shirt. You"
    assert fields["choices"] == [" Wear it.", "x. y", "a b", " Go."]  # strip runs before the markers go
    assert fields["answer"] == 2


def test_hellaswag_choices_share_their_context_in_one_packed_row():
    """The local backend lays a shared token head out once; HellaSwag's four endings of one
    context form such a pack (no task-specific machinery), and a batch holds several contexts."""
    from evalharness.backends.hf.loglikelihood import plan as plan_batches
    from evalharness.backends.hf.loglikelihood import prepare
    from evalharness.backends.prompt_fitting import Encoder, load_tokenizer
    from tests.conftest import LLAMA_TOKENIZER

    planned = plan(RunConfig(tasks=("hellaswag",), limit=40), DataSource(DATA), PromptRenderer())
    requests = [r for p in planned for r in p.requests]
    assert isinstance(requests[0], LoglikelihoodRequest)
    prepared = prepare(Encoder(load_tokenizer(str(LLAMA_TOKENIZER))), requests, 4096)
    batches = plan_batches(prepared, 8)
    packs = [p for b in batches for p in b.packs]
    grouped = {m for p in packs if len(p.members) > 1 and p.head >= 13 for m in p.members}
    assert grouped == {p.inputs for p in prepared}  # every ending shares its context's row
    assert sum(len(m) for p in packs for m in p.members) > 1.5 * sum(p.length for p in packs)
    assert all(len(b.packs) == 8 for b in batches[:-1])  # rows of eight contexts per forward pass
    scored_from = {p.inputs: len(p.inputs) - len(p.continuation) for p in prepared}
    assert all(p.head <= scored_from[m] for p in packs for m in p.members)


def test_partial_scoring_reports_only_acc_and_acc_norm():
    from evalharness.tasks.winogrande import WinoGrande

    with pytest.raises(TypeError, match="partial scoring reports acc and acc_norm"):
        type("Bad", (WinoGrande,), {"metrics": ("acc", "acc_calibrated")})


# --- scoring: acc and acc_norm (and the calibration) disagree ------------------------------------------


def test_acc_and_acc_norm_disagree_on_a_hand_made_arc_question():
    task = task_of("arc_easy")
    doc = Doc("arc_easy", 0, task.record_to_doc({
        "question": "What do plants need?", "answerKey": "2",  # a Regents-style numeric key
        "choices": {"text": ["sun", "water and sunlight"], "label": ["1", "2"]},
    }))
    outcome = task.score(doc, ll(-6.0, -9.0))  # "sun" likelier in total, the long answer per character
    assert outcome.metrics == {"acc": 0.0, "acc_norm": 1.0}
    assert outcome.prediction == 0 and outcome.extra["prediction_norm"] == 1


def test_piqa_and_siqa_map_hub_records_and_score_both_metrics():
    piqa, siqa = task_of("piqa"), task_of("siqa")
    doc = Doc("piqa", 0, piqa.record_to_doc({"goal": "g", "sol1": "ab", "sol2": "abcdefghij", "label": 1}))
    assert piqa.score(doc, ll(-4.0, -5.0)).metrics == {"acc": 0.0, "acc_norm": 1.0}
    doc = Doc("siqa", 0, siqa.record_to_doc({"context": "c", "question": "q", "answerA": "yes",
                                             "answerB": "no", "answerC": "a long answer", "label": "3"}))
    assert doc.fields["answer"] == 2
    assert siqa.score(doc, ll(-3.0, -2.5, -6.0)).metrics == {"acc": 0.0, "acc_norm": 1.0}


def test_openbookqa_calibration_divides_by_the_answer_prior():
    task = task_of("openbookqa")
    doc = Doc("openbookqa", 0, task.record_to_doc({
        "question_stem": "The sun is", "answerKey": "B",
        "choices": {"text": ["hot", "a star", "cold", "green"], "label": ["A", "B", "C", "D"]}}))
    # conditional: "hot" wins outright and per character... unless "hot" is likely anyway after "Answer:".
    outcome = task.score(doc, ll(-2.0, -4.5, -9.0, -9.0, -1.0, -6.0, -8.0, -8.0))
    assert outcome.metrics == {"acc": 0.0, "acc_norm": 0.0, "acc_calibrated": 1.0}
    assert outcome.extra["prediction_calibrated"] == 1


def test_answer_index_maps_either_label_style():
    assert answer_index(["A", "B", "C", "D"], "C") == 2
    assert answer_index(["1", "2", "3", "4"], "4") == 3
    assert answer_index(["A", "B", "C", "D"], "2") == 1  # a digit key on letter labels: by position
    assert answer_index(["1", "2", "3"], "B") == 1
    assert answer_index([" A", "B"], " B") == 1  # OBQA's hub keys may carry spaces (lm-eval lstrips)
    with pytest.raises(ValueError, match="answer key 'E' is not one of the labels"):
        answer_index(["A", "B", "C", "D"], "E")
    with pytest.raises(ValueError):
        answer_index(["A", "B"], "3")


def test_arc_reads_the_numeric_label_rows():
    task = task_of("arc_challenge")
    docs = task.documents(DataSource(DATA), "arc_challenge")
    rows = [json.loads(line) for line in (DATA / "arc" / "ARC-Challenge-Test.jsonl").read_text().splitlines()]
    numeric = [i for i, row in enumerate(rows) if row["answerKey"].isdigit()]
    assert len(docs) == 1172 and len(numeric) == 22
    assert all(docs[i].fields["answer"] == int(rows[i]["answerKey"]) - 1 for i in numeric)


# --- malformed rows: one line naming the file and line -------------------------------------------------


def test_hellaswag_row_with_three_endings_is_a_one_line_error(tmp_path):
    rows = gzip.decompress((DATA / "hellaswag" / "validation.jsonl.gz").read_bytes()).decode().splitlines()[:5]
    bad = json.loads(rows[3])
    bad["endings"] = bad["endings"][:3]
    rows[3] = json.dumps(bad)
    (tmp_path / "hellaswag").mkdir()
    (tmp_path / "hellaswag" / "validation.jsonl.gz").write_bytes(gzip.compress("\n".join(rows).encode()))
    with pytest.raises(DataError) as error:
        task_of("hellaswag").documents(DataSource(tmp_path), "hellaswag")
    message = str(error.value)
    assert "\n" not in message
    assert message.endswith("validation.jsonl.gz, line 4: expected 4 endings, got 3")


@pytest.mark.parametrize("labels, detail", [
    ("0\n1\n", "2 labels for the 3 records of .*dev.jsonl \\(line 3 should label record 3\\)"),
    ("0\n1\n1\n0\n", "4 labels for the 3 records of .*dev.jsonl \\(line 4 labels no record\\)"),
    ("0\n2\n1\n", "dev.jsonl, line 2: label 2 is not 0 or 1"),
])
def test_piqa_label_file_errors_name_the_file_and_line(tmp_path, labels, detail):
    (tmp_path / "piqa").mkdir()
    rows = (DATA / "piqa" / "dev.jsonl").read_text().splitlines(keepends=True)[:3]
    (tmp_path / "piqa" / "dev.jsonl").write_text("".join(rows))
    (tmp_path / "piqa" / "dev-labels.lst").write_text(labels)
    with pytest.raises(DataError, match=detail) as error:
        task_of("piqa").documents(DataSource(tmp_path), "piqa")
    assert "\n" not in str(error.value)


def test_openbookqa_choices_that_do_not_parse_name_the_line(tmp_path):
    (tmp_path / "obqa").mkdir()
    lines = (DATA / "openbookqa" / "test.tsv").read_text().splitlines()[:3]
    cells = lines[2].split("\t")
    cells[2] = "A) a marsh (B) a tundra"
    (tmp_path / "obqa" / "test.tsv").write_text("\n".join(lines[:2] + ["\t".join(cells)]) + "\n")
    from evalharness.tasks.openbookqa import from_release

    with pytest.raises(DataError, match=r"test.tsv, line 3: cannot read the choices"):
        TsvRows("obqa/test.tsv", to_record=from_release).read(DataSource(tmp_path), "test", None)


# --- the card mapping and one end-to-end run ------------------------------------------------------------


def test_card_maps_commonsense_to_the_papers_metrics():
    card = load_card()
    expected = {name: "acc_norm" for name in TASKS} | {"openbookqa": "acc_calibrated"}
    for name, metric in expected.items():
        bench = card.benchmarks[name]
        assert (bench.task, bench.metric, bench.provisional) == (name, metric, False)
        assert metric in task_of(name).metrics
    assert card.benchmarks["commonsense_qa"].shots == 7 and task_of("commonsense_qa").default_fewshot == 7


def test_all_eight_tasks_run_end_to_end_on_the_tiny_model(tmp_path):
    result = run_cli(
        "run", "--model", str(TINY_LLAMA), "--tasks", ",".join(TASKS), "--limit", "10", "--data-dir", str(DATA),
        "--device", "cpu", "--no-cache", "--output", str(tmp_path / "run"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    for name in TASKS:
        entry = results["tasks"][name]
        expected = {"acc", "acc_norm"} | ({"acc_calibrated"} if name == "openbookqa" else set())
        assert set(entry["metrics"]) == expected and entry["n"] == 10
        assert all(0.0 <= m["value"] <= 1.0 for m in entry["metrics"].values())
        assert entry["num_fewshot"] == (7 if name == "commonsense_qa" else 0)
    assert results["tasks"]["commonsense_qa"]["approximate"] is True
    assert not results["tasks"]["piqa"].get("approximate")
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 80
    first_hellaswag = next(s for s in samples if s["task"] == "hellaswag")
    assert first_hellaswag["prompt"] == FIRST["hellaswag"][0] and len(first_hellaswag["output"]) == 4
    csqa = next(s for s in samples if s["task"] == "commonsense_qa")
    assert set(csqa["output"]) == {"A", "B", "C", "D", "E"} and csqa["fewshot_ids"] == [0, 1, 2, 3, 4, 5, 6]
    assert "approximate" in result.stdout
