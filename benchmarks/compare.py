"""Agreement between the two harnesses' per-document outputs, and the work they represent."""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from records import DocRecord, Key

log = logging.getLogger(__name__)


class Tokenizer(Protocol):
    def __call__(self, text: list[str]) -> Any: ...


def agreement(ours: Mapping[Key, DocRecord], theirs: Mapping[Key, DocRecord], examples: int = 3) -> dict[str, Any]:
    """Share of identical prompts, predictions and generations; largest log-likelihood difference.

    Also a few concrete examples of each kind of disagreement, for the report. A row may mix
    choice documents (log-likelihoods) and generation documents (the whole-card row).
    """
    keys = sorted(set(ours) & set(theirs))
    if not keys:
        raise RuntimeError("the two harnesses share no documents to compare")
    result: dict[str, Any] = {"n_compared": len(keys), "only_ours": len(set(ours) - set(theirs)),
                              "only_lm_eval": len(set(theirs) - set(ours))}  # fmt: skip
    same_prompt = {k for k in keys if ours[k].prompt == theirs[k].prompt}
    result["prompts_identical"] = len(same_prompt) / len(keys)
    same_prediction = {k for k in keys if ours[k].prediction == theirs[k].prediction}
    result["predictions_identical"] = len(same_prediction) / len(keys)
    # the target: identical predictions where the prompts are identical
    result["predictions_identical_same_prompt"] = len(same_prediction & same_prompt) / len(same_prompt) if same_prompt else math.nan
    notes: list[str] = []
    for k in [k for k in keys if k not in same_prompt][:examples]:
        notes.append(f"prompt differs {k}: {first_difference(ours[k].prompt, theirs[k].prompt)}")

    def prompt(k: Key) -> str:
        return "identical" if k in same_prompt else "different"

    scored = [k for k in keys if ours[k].logprobs]
    if scored:
        diffs: list[tuple[float, Key, str]] = []
        for k in scored:
            a, b = ours[k], theirs[k]
            if a.continuations != b.continuations:
                notes.append(f"continuations differ {k}: {a.continuations!r} vs {b.continuations!r}")
                continue
            diffs.extend((abs(x - y), k, c) for x, y, c in zip(a.logprobs, b.logprobs, a.continuations, strict=True))
        worst = max(diffs, default=(math.nan, None, None), key=lambda d: d[0])
        result["max_abs_logprob_diff"] = worst[0]
        result["max_abs_logprob_diff_same_prompt"] = max((d for d, k, _ in diffs if k in same_prompt), default=math.nan)
        if worst[1] is not None:
            notes.append(f"largest log-likelihood difference {worst[0]:.2e} at {worst[1]} choice {worst[2]!r} (prompt {prompt(worst[1])})")
        for k in [k for k in scored if ours[k].prediction != theirs[k].prediction][:examples]:
            notes.append(
                f"prediction differs {k}: ours {ours[k].prediction} {_rounded(ours[k].logprobs)},"
                f" lm-eval {theirs[k].prediction} {_rounded(theirs[k].logprobs)} (prompt {prompt(k)})"
            )
    generated = [k for k in keys if ours[k].generation is not None]
    if generated:
        same_gen = [k for k in generated if ours[k].generation == theirs[k].generation]
        result["generations_identical"] = len(same_gen) / len(generated)
        for k in [k for k in generated if k not in set(same_gen)][:examples]:
            notes.append(f"generation differs {k} (prompt {prompt(k)}): " + first_difference(ours[k].generation or "", theirs[k].generation or ""))
        for k in [k for k in same_gen if ours[k].prediction != theirs[k].prediction][:examples]:
            notes.append(
                f"extracted answer differs {k} on the identical generation: ours {ours[k].prediction},"
                f" lm-eval {theirs[k].prediction}; generation {(ours[k].generation or '')[-120:]!r}"
            )
    result["score_ours"] = sum(ours[k].score for k in keys) / len(keys)
    result["score_lm_eval"] = sum(theirs[k].score for k in keys) / len(keys)
    result["notes"] = notes
    return result


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(v, 3) for v in values]


def first_difference(a: str, b: str, context: int = 40) -> str:
    """Where two strings first differ, with a little context from each."""
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    start = max(0, i - context)
    return f"at char {i}: ours {a[start : i + context]!r} / lm-eval {b[start : i + context]!r}"


def input_sequences(docs: Mapping[Key, DocRecord], tokenizer: Tokenizer) -> list[tuple[int, ...]]:
    """The token sequences a model has to be run on for these documents (estimated from the logs).

    Log-likelihood: context + continuation without its last token, per scored continuation.
    Generation: prompt + generated text (the tokens fed during decoding, up to the stop).
    """
    texts, cut = [], []
    for doc in docs.values():
        scored = zip(doc.contexts, doc.continuations, strict=True) if doc.continuations else ()
        for context, continuation in scored:
            texts.append(context + continuation)
            cut.append(1)
        if doc.generation is not None:
            texts.append(doc.contexts[0] + doc.generation)
            cut.append(0)
    encoded = tokenizer(texts)["input_ids"] if texts else []
    return [tuple(ids[: len(ids) - c]) for ids, c in zip(encoded, cut, strict=True)]


def token_counts(sequences: list[tuple[int, ...]]) -> dict[str, int]:
    """``useful``: distinct positions over all sequences (a prefix tree's size) — the least any
    implementation computes, with every shared head (few-shot exemplars, the prompt before each
    choice) computed once. ``no_prefix_reuse``: each distinct sequence in full — what lm-eval's HF
    backend computes (it merges only choices that differ in their last token), without padding.
    """
    distinct = sorted(set(sequences))
    useful = 0
    previous: tuple[int, ...] = ()
    for seq in distinct:
        common = next((i for i, (a, b) in enumerate(zip(seq, previous, strict=False)) if a != b), min(len(seq), len(previous)))
        useful += len(seq) - common
        previous = seq
    return {"useful": useful, "no_prefix_reuse": sum(len(s) for s in distinct)}


def parameter_count(model_dir: Path) -> int:
    """Parameters stored in the folder's safetensors files (tied weights are stored once)."""
    total = 0
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors file in {model_dir}")
    for path in files:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                total += math.prod(info["shape"])
    return total
