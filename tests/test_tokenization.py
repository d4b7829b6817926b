"""The context/continuation boundary, checked against SentencePiece itself."""

from __future__ import annotations

import pytest
import sentencepiece as spm

from evalharness.backends.prompt_fitting import EncodedContext, Encoder, load_tokenizer
from tests.conftest import LLAMA_TOKENIZER, STORIES

TRICKY = [
    "Hello world",
    " Hello world",  # transformers 5's LlamaTokenizer drops SentencePiece's 29871 here
    "  two leading spaces",
    " ",
    "Answer: A",
    "3.14159 and 1,000,000 and 2026",
    "naïve café — 日本語 🙂 Ωmega",
    "tabs\tand\nnew\n\nlines ",
    "trailing spaces   ",
]


@pytest.fixture(scope="module", params=[LLAMA_TOKENIZER, STORIES], ids=["llama2", "stories260K"])
def pair(request):
    path = request.param
    return Encoder(load_tokenizer(str(path))), spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model"))


@pytest.mark.parametrize("text", TRICKY)
def test_encoding_matches_sentencepiece(pair, text):
    encoder, sp = pair
    assert list(encoder.encode_many([text])[0]) == sp.encode(text)


def test_empty_string_encodes_to_nothing(pair):
    encoder, _ = pair
    assert encoder.encode_many([""]) == [()]


def test_bos_is_the_only_prefix(pair):
    encoder, sp = pair
    assert encoder.prefix_ids == (sp.bos_id(),)


def test_answer_letter_is_one_token_after_the_colon():
    encoder = Encoder(load_tokenizer(str(LLAMA_TOKENIZER)))
    sp = spm.SentencePieceProcessor(model_file=str(LLAMA_TOKENIZER / "tokenizer.model"))
    context, continuation = encoder.encode_pair("Question?\nAnswer:", " A")
    assert continuation == (sp.piece_to_id("▁A"),)
    assert context.ids == (1, *sp.encode("Question?\nAnswer:"))


def test_trailing_context_whitespace_moves_onto_the_continuation():
    encoder = Encoder(load_tokenizer(str(LLAMA_TOKENIZER)))
    assert encoder.encode_pair("Answer: ", "A") == encoder.encode_pair("Answer:", " A")


@pytest.mark.parametrize(
    ("context", "continuation"),
    [("The quick bro", "wn fox"), ("hello", "o"), ("", " hello"), ("x", " "), ("abc", "\n")],
)
def test_continuation_is_never_empty_and_tokens_rejoin(pair, context, continuation):
    encoder, sp = pair
    ctx, cont = encoder.encode_pair(context, continuation)
    assert len(cont) >= 1
    # Whatever the split, context + continuation tokens are exactly the joint encoding.
    expected = list(encoder.start_ids) + sp.encode(context.rstrip() + context[len(context.rstrip()):] + continuation)
    assert list(ctx.ids + cont) == expected


def test_protected_boundary_marks_the_document():
    encoder = Encoder(load_tokenizer(str(LLAMA_TOKENIZER)))
    shots, document = "Q: one\nA: 1\n\n", "Q: two\nA:"
    ctx, _ = encoder.encode_pair(shots + document, " 2", protected_chars=len(document))
    assert encoder.tokenizer.decode(ctx.ids[ctx.protected_from :]).strip() == document.strip()


def test_fit_keeps_bos_and_drops_fewshot_text_first():
    encoder = Encoder(load_tokenizer(str(LLAMA_TOKENIZER)))
    context = EncodedContext((1, 10, 11, 12, 13, 14, 15), protected_from=4)
    window = encoder.fit(context, budget=5)
    assert window.ids == (1, 12, 13, 14, 15)
    assert window.truncated and not window.truncated_document
    deep = encoder.fit(context, budget=3)
    assert deep.ids == (1, 14, 15) and deep.truncated_document
    assert encoder.fit(context, budget=7).truncated is False


def test_tokenizer_without_bos_gets_no_start_token():
    """GPT-2-style tokenizers (e.g. SmolLM2) add no BOS: nothing may be prepended to the text,
    and only an empty context falls back to EOS (as lm-eval does)."""
    tokenizer = load_tokenizer(str(LLAMA_TOKENIZER))
    tokenizer.backend_tokenizer.post_processor = None  # stop adding <s>
    encoder = Encoder(tokenizer)
    assert encoder.prefix_ids == ()
    context, continuation = encoder.encode_pair("Hello", " world")
    assert context.ids == tuple(encoder.encode_many(["Hello"])[0])
    assert context.ids + continuation == tuple(encoder.encode_many(["Hello world"])[0])
    empty, _ = encoder.encode_pair("", " hi")
    assert empty.ids == (tokenizer.eos_token_id,)
    assert encoder.encode_context("", 0).ids == (tokenizer.eos_token_id,)
    assert encoder.encode_context("Hi", 0).ids[0] != tokenizer.eos_token_id
