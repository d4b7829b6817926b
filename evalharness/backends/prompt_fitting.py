"""Prompt fitting, for any backend: the context/continuation boundary and the context-window rule.

It needs only a tokenizer (a Hugging Face one: the model's own, or ``--tokenizer`` for a remote
backend), never the model, so every backend gets the same truncation rules.

Other harnesses lose points here: tok(a + b) != tok(a) + tok(b) (lm-eval PR #531), a token
spanning the join can leave the continuation empty (lm-eval #1053), and transformers 5's
``LlamaTokenizer`` drops SentencePiece's leading-space piece 29871. We therefore encode
context + continuation together, split at the longest common prefix with the encoded context,
and load Llama tokenizers through their ``tokenizer.json`` (which matches SentencePiece).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalharness.core.errors import EvalHarnessError


def load_tokenizer(name_or_path: str, **kwargs: Any) -> Any:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if type(tokenizer).__name__.startswith("LlamaTokenizer"):
        # transformers 5 rebuilds Llama's pre-tokenizer and no longer adds SentencePiece's
        # dummy prefix before a leading space; tokenizer.json's own pipeline does.
        try:
            tokenizer = PreTrainedTokenizerFast.from_pretrained(name_or_path, **kwargs)
        except (OSError, ValueError):
            pass  # no tokenizer.json: keep the slow/SentencePiece-backed tokenizer
    return tokenizer


ENCODE_CHUNK = 256


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_ids_of(with_special: Sequence[int], without: Sequence[int]) -> tuple[int, ...]:
    """The tokens a tokenizer puts before the text (BOS): ``"a"`` encoded with and without them."""
    for start in range(len(with_special) - len(without) + 1):
        if list(with_special[start : start + len(without)]) == list(without):
            return tuple(int(t) for t in with_special[:start])
    return ()


@dataclass(frozen=True)
class EncodedContext:
    """Token ids of a context, and where the test document's own part starts in them."""

    ids: tuple[int, ...]
    protected_from: int


@dataclass(frozen=True)
class Window:
    """A context cut to fit the model: what was kept and whether anything was dropped."""

    ids: tuple[int, ...]
    truncated: bool
    truncated_document: bool


class Encoder:
    """Wraps a tokenizer with the harness's encoding rules; memoises repeated strings."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        prefix = prefix_ids_of(
            tokenizer("a", add_special_tokens=True)["input_ids"], tokenizer("a", add_special_tokens=False)["input_ids"]
        )
        if not prefix and tokenizer.eos_token_id is None:
            raise EvalHarnessError("tokenizer has neither a BOS nor an EOS token to start a prompt")
        self._setup(prefix, tokenizer.eos_token_id, len(tokenizer))

    def _setup(self, prefix_ids: tuple[int, ...], eos_token_id: int | None, vocab_size: int) -> None:
        # Tokens the model reads before any text: BOS where the tokenizer adds one (Llama), none
        # otherwise (GPT-2-style BPE, e.g. SmolLM2). An empty context still needs one token to
        # condition on, and then gets EOS, as lm-eval does.
        self.prefix_ids = prefix_ids
        self.start_ids = prefix_ids
        self.empty_context_ids = prefix_ids or (() if eos_token_id is None else (int(eos_token_id),))
        self._memo: dict[str, tuple[int, ...]] = {}
        # Token tuples share one int object per id: 8 bytes per token instead of 36, which is
        # the difference between 1 and 9 GB of RAM on the full MMLU.
        self._ints = list(range(vocab_size + 1024))

    def encode_many(self, texts: Sequence[str]) -> list[tuple[int, ...]]:
        """Encode without special tokens, in batched calls for the strings not seen yet."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo and t))
        ints = self._ints
        # Chunks bound the tokenizer's per-token bookkeeping (offsets, strings) to a few MB.
        for start in range(0, len(missing), ENCODE_CHUNK):
            chunk = missing[start : start + ENCODE_CHUNK]
            for text, ids in zip(chunk, self._encode_batch(chunk), strict=False):
                self._memo[text] = tuple(ints[i] for i in ids)
        return [self._memo[t] if t else () for t in texts]

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None and hasattr(backend, "encode_batch_fast"):
            # The Rust pipeline without offsets: the same ids, several times faster.
            return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
        return list(self.tokenizer(texts, add_special_tokens=False)["input_ids"])

    def _start(self, empty: bool) -> tuple[int, ...]:
        """The tokens before a context's text; an empty context needs one to condition on."""
        if empty and not self.empty_context_ids:
            raise EvalHarnessError(
                "an empty context needs the model's EOS token id, which the server's /tokenize does not "
                "tell: pass --tokenizer"
            )
        return self.empty_context_ids if empty else self.start_ids

    def forget(self) -> None:
        """Drop memoised encodings once a request list is prepared."""
        self._memo.clear()

    def encode_context(self, context: str, protected_chars: int) -> EncodedContext:
        ids, head = self.encode_many([context, context[: len(context) - protected_chars]])
        boundary = common_prefix_len(ids, head) if protected_chars else len(ids)
        start = self._start(empty=not ids)
        return EncodedContext(start + ids, len(start) + boundary)

    def encode_pair(
        self, context: str, continuation: str, protected_chars: int = 0
    ) -> tuple[EncodedContext, tuple[int, ...]]:
        """Token ids of (context, continuation); the continuation is never empty."""
        stripped = context.rstrip()
        if stripped != context:
            # Trailing context whitespace belongs to the continuation's first token.
            continuation = context[len(stripped) :] + continuation
            protected_chars = min(protected_chars, len(stripped))
            context = stripped
        whole, ctx_ids, head = self.encode_many(
            [context + continuation, context, context[: len(context) - protected_chars]]
        )
        if not whole:
            raise EvalHarnessError(f"continuation {continuation!r} encodes to no tokens")
        split = min(common_prefix_len(whole, ctx_ids), len(whole) - 1)
        boundary = min(common_prefix_len(ctx_ids, head), split) if protected_chars else split
        start = self._start(empty=not split)
        return EncodedContext(start + whole[:split], len(start) + boundary), whole[split:]

    def fit(self, context: EncodedContext, budget: int) -> Window:
        """Left-truncate a context to ``budget`` tokens, keeping its BOS/start tokens.

        Few-shot text goes first; the document's own part is cut only if it alone overflows.
        """
        ids = context.ids
        if len(ids) <= budget:
            return Window(ids, False, False)
        start = len(self.start_ids)
        if budget <= start:
            raise EvalHarnessError(
                f"the model's context window leaves no room for the prompt ({budget} tokens)"
            )
        drop = len(ids) - budget
        kept = ids[:start] + ids[start + drop :]
        return Window(kept, True, start + drop > context.protected_from)
