"""Batched log-likelihood scoring on a causal LM.

Requests whose model inputs are identical (MMLU's four single-token answers after the same
question) share one forward pass, and the vocabulary projection and log-softmax run only at
the continuation positions, never over every position of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalharness.errors import EvalHarnessError
from evalharness.hf.tokenization import Encoder
from evalharness.progress import progress_bar
from evalharness.requests import LoglikelihoodRequest, LoglikelihoodResponse


@dataclass(frozen=True)
class PreparedRequest:
    inputs: tuple[int, ...]  # the (possibly truncated) context + continuation[:-1]
    continuation: tuple[int, ...]
    truncated: bool
    truncated_document: bool


def prepare(
    encoder: Encoder, requests: Sequence[LoglikelihoodRequest], max_length: int
) -> list[PreparedRequest]:
    # One batched tokenizer call for every distinct string, instead of one call per request.
    encoder.encode_many(
        [s for r in requests for s in (r.context.rstrip(), r.context + r.continuation)]
    )
    prepared = []
    for request in requests:
        context, continuation = encoder.encode_pair(
            request.context, request.continuation, request.protected_chars
        )
        if len(continuation) > max_length - 1:
            raise EvalHarnessError(
                f"a continuation of {len(continuation)} tokens does not fit the model's "
                f"{max_length}-token context"
            )
        window = encoder.fit(context, max_length - len(continuation) + 1)
        prepared.append(
            PreparedRequest(
                window.ids + continuation[:-1],
                continuation,
                window.truncated,
                window.truncated_document,
            )
        )
    return prepared


def score(
    model: Any,
    prepared: Sequence[PreparedRequest],
    batch_size: int,
    device: str,
    pad_id: int,
    desc: str = "loglikelihood",
) -> list[LoglikelihoodResponse]:
    import torch

    groups: dict[tuple[int, ...], list[int]] = {}
    for index, item in enumerate(prepared):
        groups.setdefault(item.inputs, []).append(index)
    # Longest first: an out-of-memory error shows up at once, and padding stays small.
    ordered = sorted(groups, key=lambda ids: (-len(ids), ids))
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    results: list[LoglikelihoodResponse | None] = [None] * len(prepared)

    with torch.inference_mode(), progress_bar(total=len(ordered), desc=desc, unit="seq") as bar:
        for start in range(0, len(ordered), batch_size):
            batch = ordered[start : start + batch_size]
            width = len(batch[0])
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            for row, inputs in enumerate(batch):
                ids[row, : len(inputs)] = torch.tensor(inputs)
            # Right padding under a causal mask: no real position can see a pad token, so no
            # padding mask is needed and attention takes its fused causal path.
            hidden = decoder(input_ids=ids.to(device))[0]
            for row, inputs in enumerate(batch):
                for index in groups[inputs]:
                    item = prepared[index]
                    n = len(item.continuation)
                    logits = head(hidden[row, len(inputs) - n : len(inputs)]).float()
                    if softcap:
                        logits = torch.tanh(logits / softcap) * softcap
                    logprobs = torch.log_softmax(logits, dim=-1)
                    target = torch.tensor(item.continuation, device=logprobs.device)
                    picked = logprobs.gather(1, target[:, None]).squeeze(1)
                    results[index] = LoglikelihoodResponse(
                        logprob=float(picked.sum()),
                        is_greedy=bool((logprobs.argmax(dim=-1) == target).all()),
                        num_tokens=n,
                        truncated=item.truncated,
                        truncated_document=item.truncated_document,
                    )
            bar.update(len(batch))
    return [r for r in results if r is not None]
