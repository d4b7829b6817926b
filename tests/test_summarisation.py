"""cnn_dailymail (summarisation), cnn_dailymail_textgen (the Azure ML card sample) and samsum:
metric values checked by hand, exact prompts, truncation that never drops the instruction, and
the command line end to end on stories260K."""

from __future__ import annotations

import json
import math
import sys

import pytest

from evalharness.core.errors import EvalHarnessError, UnknownNameError
from evalharness.core.prompt_render import PromptRenderer
from evalharness.core.requests import GenerateRequest
from evalharness.core.task_selection import resolve
from evalharness.data.source import DataSource
from evalharness.scoring import text_overlap as tm
from tests.conftest import DATA, LLAMA_TOKENIZER, STORIES, run_cli

CNN_INSTRUCTION = "\n\nSummarize the above article in 3 sentences.\n"
SAMSUM_INSTRUCTION = "\n\nSummarize the above dialogue.\n"


def _rows(*parts: str) -> list[dict]:
    return [json.loads(line) for line in DATA.joinpath(*parts).read_text("utf-8").splitlines() if line.strip()]


def _task(name: str, **options):
    (selection,) = resolve([name], options)
    return selection.task


def _prompt(task, doc_index: int = 0):
    doc = task.documents(DataSource(DATA), task.name)[doc_index]
    return doc, PromptRenderer().build(task, doc, [])


# --- metrics on hand-checked strings ------------------------------------------------------


def test_rouge_with_stemming_by_hand():
    # Stemmed tokens (rouge-score stems tokens longer than 3 characters):
    #   prediction: the cat are run quickli dog bark        (7)
    #   reference:  the cat ran quick dog bark loudli        (7)
    # Unigram overlap {the, cat, dog, bark} = 4 → P = R = F = 4/7.
    # Bigrams: 6 each, shared {the cat, dog bark} = 2 → 2/6.
    scores = tm.rouge("The cats are running quickly. Dogs bark!", "the cat ran quick. dogs barked loudly.")
    assert scores["rouge1"] == pytest.approx(4 / 7)
    assert scores["rouge2"] == pytest.approx(2 / 6)
    assert scores["rougeL"] == pytest.approx(4 / 7)  # LCS: the cat dog bark
    unstemmed = tm.rouge("The cats are running quickly. Dogs bark!", "the cat ran quick. dogs barked loudly.",
                         use_stemmer=False)
    assert unstemmed["rouge1"] == pytest.approx(2 / 7)  # only "the" and "dogs" match


def test_rouge_lsum_uses_sentences_and_rouge_l_does_not():
    # Sentences in swapped order: the longest common subsequence over the whole text is 3 of 6
    # tokens, but each reference sentence is fully matched by a prediction sentence.
    scores = tm.rouge("a b c. d e f.", "d e f. a b c.")
    assert scores["rougeL"] == pytest.approx(0.5)
    assert scores["rougeLsum"] == pytest.approx(1.0)
    assert scores["rouge1"] == pytest.approx(1.0)
    assert scores["rouge2"] == pytest.approx(4 / 5)  # "c d" vs "f a" differ


def test_sentence_splitting_for_rouge_lsum():
    assert tm.sentences_per_line("One. Two! Three? Four") == "One.\nTwo!\nThree?\nFour"
    assert tm.sentences_per_line('He said "Go." Then left.\nNew line .\n\n') == 'He said "Go."\nThen left.\nNew line .'
    assert tm.sentences_per_line("It rose 3.5 percent. Then fell.") == "It rose 3.5 percent.\nThen fell."
    assert tm.sentences_per_line("In the U.S. it rose.") == "In the U.S.\nit rose."  # no abbreviation list
    highlights = _rows("cnn_dailymail", "test_first500.jsonl")[0]["highlights"]
    assert tm.sentences_per_line(highlights).count("\n") == highlights.strip().count("\n")


def test_bleu_by_hand():
    # hyp "the cat sat on the mat today" vs ref "the cat sat on a mat today", 13a tokens:
    # clipped matches 1..4-grams: 6/7, 4/6, 2/5, 1/4; equal lengths (BP = 1).
    stats = tm.bleu_stats("the cat sat on the mat today", "the cat sat on a mat today")
    assert stats == tm.BleuStats(7, 7, (6, 4, 2, 1), (7, 6, 5, 4))
    assert tm.corpus_bleu([stats], 4) == pytest.approx((6 / 7 * 4 / 6 * 2 / 5 * 1 / 4) ** (1 / 4))
    assert tm.corpus_bleu([stats], 3) == pytest.approx((6 / 7 * 4 / 6 * 2 / 5) ** (1 / 3))


def test_bleu_brevity_penalty_and_no_smoothing():
    # hyp "the cat sat" (3 tokens) vs a 6-token reference: all n-grams match, BP = exp(1 - 6/3).
    short = tm.bleu_stats("the cat sat", "the cat sat on the mat")
    assert tm.corpus_bleu([short], 3) == pytest.approx(math.exp(1 - 6 / 3))
    assert tm.corpus_bleu([short], 4) == 0.0  # no 4-gram at all: unsmoothed BLEU-4 is 0
    # One 4-gram and it does not match: BLEU-3 > 0, BLEU-4 = 0 (no smoothing).
    miss = tm.bleu_stats("a b c x", "a b c d")
    assert tm.corpus_bleu([miss], 3) > 0 and tm.corpus_bleu([miss], 4) == 0.0


def test_bleu_is_corpus_level_and_matches_sacrebleu():
    import sacrebleu

    pairs = [
        ("The cat is on the mat.", "The cat sat on the mat."),
        ("A quick brown fox jumps over the dog", "The quick brown fox jumped over the lazy dog."),
        ("It rained in Paris on Monday, officials said.", "Officials said it rained in Paris on Monday."),
        ("Nothing here matches", "Completely different words"),
    ]
    stats = [tm.bleu_stats(h, r) for h, r in pairs]
    hyps, refs = [h for h, _ in pairs], [[r for _, r in pairs]]
    for order in (3, 4):
        bleu = sacrebleu.metrics.BLEU(tokenize="13a", smooth_method="none", max_ngram_order=order)
        assert tm.corpus_bleu(stats, order) == pytest.approx(bleu.corpus_score(hyps, refs).score / 100)
    sentence_mean = sum(tm.corpus_bleu([s], 4) for s in stats) / len(stats)
    assert tm.corpus_bleu(stats, 4) != pytest.approx(sentence_mean)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    values = [0.1, 0.4, 0.2, 0.9, 0.5, 0.3, 0.0, 0.7] * 5
    first, again = tm.bootstrap_mean(values, seed=7), tm.bootstrap_mean(values, seed=7)
    assert first == again
    assert tm.bootstrap_mean(values, seed=8) != first
    mean = sum(values) / len(values)
    assert first.low < mean < first.high and first.stderr > 0
    constant = tm.bootstrap_mean([0.25] * 10, seed=1)
    assert constant.low == constant.high == 0.25
    stats = [tm.bleu_stats(h, r) for h, r in [("a b c d e", "a b c d e"), ("x y z w", "a b c d"), ("a b c d", "a b c d x")]]
    bleu = tm.bootstrap_bleu(stats, (3, 4), seed=3)
    assert bleu == tm.bootstrap_bleu(stats, (3, 4), seed=3)
    assert 0 <= bleu[4].low <= tm.corpus_bleu(stats, 4) <= bleu[4].high <= 1 + 1e-9


@pytest.mark.parametrize(("module", "package", "check"), [
    ("rouge_score", "rouge-score", tm.require_rouge),
    ("sacrebleu", "sacrebleu", tm.require_bleu),
])
def test_missing_metric_package_is_a_clear_error(monkeypatch, module, package, check):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    with pytest.raises(EvalHarnessError, match=f"needs the '{package}' package"):
        check()


def test_missing_rouge_fails_at_planning_not_with_zero(monkeypatch):
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    for name in ("cnn_dailymail", "cnn_dailymail_textgen", "samsum"):
        with pytest.raises(EvalHarnessError, match="rouge-score"):
            _task(name).preflight(DataSource(DATA))


# --- prompts -------------------------------------------------------------------------------


def test_cnn_dailymail_prompt_is_helm_by_default():
    first = _rows("cnn_dailymail", "test_first500.jsonl")[0]
    task = _task("cnn_dailymail")
    doc, prompt = _prompt(task)
    assert prompt.text == f"###\nArticle: {first['article']}{CNN_INSTRUCTION}"
    assert prompt.text.startswith("###\nArticle: (CNN)The Palestinian Authority officially became")
    assert task.target(doc) == first["highlights"]
    assert doc.doc_id == 0 and doc.fields["id"] == "f001ec5c4704938247d27a44948eebb37ae98d01"
    (request,) = task.requests(doc, prompt)
    assert isinstance(request, GenerateRequest)
    assert request.protected_chars == len(CNN_INSTRUCTION)
    assert request.stop == ("###",) and request.sampling.max_new_tokens == 128 and request.sampling.greedy
    assert task.config()["template"] == "cnn_dailymail/summarize_helm.jinja"
    assert len(task.documents(DataSource(DATA), "cnn_dailymail")) == 500


def test_cnn_dailymail_tldr_variant():
    first = _rows("cnn_dailymail", "test_first500.jsonl")[0]
    task = _task("cnn_dailymail", template="tldr")
    doc, prompt = _prompt(task)
    assert prompt.text == f"{first['article']}\nTL;DR:"
    assert task.requests(doc, prompt)[0].protected_chars == len("\nTL;DR:")
    assert task.config()["template"] == "cnn_dailymail/summarize_tldr.jinja"
    assert task.config()["options"]["template"] == "tldr"


def test_unknown_template_variant_is_one_line_error():
    with pytest.raises(UnknownNameError, match="did you mean: tldr"):
        _task("cnn_dailymail", template="tdlr")


def test_textgen_prompt_is_the_first_100_characters():
    rows = _rows("cnn_dailymail", "test_first500.jsonl")
    task = _task("cnn_dailymail_textgen")
    docs = task.documents(DataSource(DATA), task.name)
    assert len(docs) == 500  # the sample takes 1,000; the local file has the first 500
    for index in (0, 123, 499):
        prompt = PromptRenderer().build(task, docs[index], [])
        assert prompt.text == rows[index]["article"][:100]
        assert task.target(docs[index]) == rows[index]["article"]  # the whole article
        (request,) = task.requests(docs[index], prompt)
        assert request.stop == () and request.sampling.max_new_tokens == 100 and request.sampling.greedy
    assert docs[0].fields["article"][:100] == (
        "(CNN)The Palestinian Authority officially became the 123rd member of the International Criminal Cour"
    )
    assert task.config()["protocol"]["documents"] == 1000


def test_samsum_prompt_normalises_crlf():
    rows = _rows("samsum", "test.jsonl")
    assert "\r\n" in rows[1]["dialogue"]
    task = _task("samsum")
    doc, prompt = _prompt(task, 1)
    dialogue = rows[1]["dialogue"].replace("\r\n", "\n")
    assert prompt.text == f"###\nDialogue:\n{dialogue}{SAMSUM_INSTRUCTION}"
    assert prompt.text.startswith("###\nDialogue:\nEric: MACHINE!\nRob: That's so gr8!\n")
    assert "\r" not in prompt.text
    assert task.target(doc) == rows[1]["summary"].strip()
    assert task.requests(doc, prompt)[0].protected_chars == len(SAMSUM_INSTRUCTION)
    tldr = _task("samsum", template="tldr")
    assert PromptRenderer().build(tldr, doc, []).text == f"{dialogue}\nTL;DR:"
    assert len(task.documents(DataSource(DATA), "samsum")) == 819


def test_custom_template_without_verbatim_source_protects_the_whole_document():
    from evalharness.core.task import Prompt
    from evalharness.shapes.summarisation import instruction_chars

    prompt = Prompt("ARTICLE TEXT\nTL;DR:", 19, "x", ())
    assert instruction_chars(prompt, "ARTICLE TEXT") == len("\nTL;DR:")
    assert instruction_chars(prompt, "article text") == 19  # not found verbatim


# --- truncation never drops the instruction -------------------------------------------------


@pytest.mark.parametrize(("name", "options", "instruction"), [
    ("cnn_dailymail", {}, CNN_INSTRUCTION),
    ("cnn_dailymail", {"template": "tldr"}, "\nTL;DR:"),
    ("samsum", {}, SAMSUM_INSTRUCTION),
])
def test_stories260k_window_keeps_the_instruction(stories_backend, name, options, instruction):
    """The real generation path on a 512-token model: the article's start goes, the
    instruction stays whole at the end of the kept window."""
    from evalharness.backends.hf.generation import _prepare

    task = _task(name, **options)
    docs = task.documents(DataSource(DATA), name)
    doc = max(docs[:20], key=lambda d: len(task.template_vars(d)[task.source_field]))
    prompt = PromptRenderer().build(task, doc, [])
    (request,) = task.requests(doc, prompt)
    row = _prepare(stories_backend.decoder, 0, request)
    budget = stories_backend.max_length - request.sampling.max_new_tokens
    assert stories_backend.max_length == 512
    assert row.truncated and not row.truncated_document
    assert len(row.prompt) == budget
    assert row.prompt[: len(stories_backend.encoder.start_ids)] == stories_backend.encoder.start_ids
    kept = stories_backend.tokenizer.decode(row.prompt, skip_special_tokens=True)
    assert kept.endswith(instruction)
    assert prompt.text.endswith(kept[-200:])  # a contiguous tail of the prompt
    assert len(kept) < len(prompt.text) - 100  # the article's beginning was dropped


def test_llama2_tokenizer_fit_cuts_the_article_not_the_instruction():
    from evalharness.backends.prompt_fitting import Encoder, load_tokenizer

    encoder = Encoder(load_tokenizer(str(LLAMA_TOKENIZER)))
    task = _task("cnn_dailymail")
    doc, prompt = _prompt(task)
    (request,) = task.requests(doc, prompt)
    encoded = encoder.encode_context(request.context, request.protected_chars)
    instruction_tokens = len(encoded.ids) - encoded.protected_from
    assert 0 < instruction_tokens < 20
    for budget in (instruction_tokens + 2, 64, 300):
        window = encoder.fit(encoded, budget)
        assert window.truncated and not window.truncated_document
        assert window.ids[-instruction_tokens:] == encoded.ids[-instruction_tokens:]
        assert encoder.tokenizer.decode(window.ids, skip_special_tokens=True).endswith(CNN_INSTRUCTION)
    # Only a window too small for the instruction itself cuts into it, and that is reported.
    assert encoder.fit(encoded, instruction_tokens).truncated_document


# --- end to end --------------------------------------------------------------------------


def test_cli_end_to_end_on_stories260k(tmp_path):
    proc = run_cli(
        "run", "--model", str(STORIES), "--model-args", "eos_token_id=1",
        "--tasks", "cnn_dailymail,cnn_dailymail_textgen,samsum", "--limit", "10",
        "--data-dir", str(DATA), "--output", str(tmp_path), "--device", "cpu", "--no-cache",
        "--batch-size", "32",  # two decode batches instead of five: half the time, same outputs
    )
    assert proc.returncode == 0, proc.stderr
    for metric in ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu_3", "bleu_4"):
        assert metric in proc.stdout
    assert "Using default tokenizer" not in proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 30
    tasks = results["tasks"]
    expected = {
        "cnn_dailymail": {"rouge1", "rouge2", "rougeL", "rougeLsum"},
        "samsum": {"rouge1", "rouge2", "rougeL", "rougeLsum"},
        "cnn_dailymail_textgen": {"rouge1", "rouge2", "bleu_3", "bleu_4"},
    }
    for name, metrics in expected.items():
        task = tasks[name]
        assert task["n"] == 10 and task["num_fewshot"] == 0
        assert set(task["metrics"]) == metrics
        assert task["confidence_intervals"]["level"] == 0.95 and task["confidence_intervals"]["resamples"] == 1000
        mine = [s for s in samples if s["task"] == name]
        assert len(mine) == 10
        for metric, value in task["metrics"].items():
            assert 0.0 <= value["value"] <= 1.0 and value["n"] == 10
            assert value["ci_low"] <= value["value"] + 1e-12 and value["value"] <= value["ci_high"] + 1e-12
            if metric.startswith("rouge"):
                per_doc = [s["metrics"][metric] for s in mine]
                assert value["value"] == pytest.approx(sum(per_doc) / 10)
        assert task["truncated_into_document"] == 0  # the instruction is never cut
    assert tasks["cnn_dailymail"]["truncated_documents"] == 10  # every article overflows 384 tokens
    assert tasks["cnn_dailymail_textgen"]["truncated_documents"] == 0
    assert tasks["cnn_dailymail"]["decoding"] == {"greedy": True, "max_new_tokens": 128, "stop": ["###"]}
    assert tasks["cnn_dailymail_textgen"]["decoding"] == {"greedy": True, "max_new_tokens": 100, "stop": []}
    assert "truncated prompts: 10" in proc.stdout
    # Corpus BLEU is recomputable from the per-document statistics in samples.jsonl.
    textgen = [s for s in samples if s["task"] == "cnn_dailymail_textgen"]
    stats = [tm.BleuStats.from_dict(s["bleu_stats"]) for s in textgen]
    for order in (3, 4):
        assert tasks["cnn_dailymail_textgen"]["metrics"][f"bleu_{order}"]["value"] == pytest.approx(
            tm.corpus_bleu(stats, order))
    rows = _rows("cnn_dailymail", "test_first500.jsonl")
    assert [s["prompt"] for s in textgen] == [r["article"][:100] for r in rows[:10]]
    assert all(s["num_tokens"] <= 100 for s in textgen)
    summaries = [s for s in samples if s["task"] == "cnn_dailymail"]
    assert all(s["prompt"].endswith(CNN_INSTRUCTION) and s["num_tokens"] <= 128 for s in summaries)
