"""The HF backend's log-likelihoods: batching must not change them, runs must repeat exactly."""

from __future__ import annotations

import math

import pytest
import torch

from evalharness.core.requests import LoglikelihoodRequest
from tests.conftest import DATA

REQUESTS = [
    LoglikelihoodRequest("The capital of France is", " Paris"),
    LoglikelihoodRequest("The capital of France is", " banana split"),
    LoglikelihoodRequest("Question: 2+2?\nAnswer:", " A"),
    LoglikelihoodRequest("Question: 2+2?\nAnswer:", " B"),
    LoglikelihoodRequest("", " Once upon a time"),
    LoglikelihoodRequest("A much longer context " * 30, " ending"),
    LoglikelihoodRequest("x ", "y"),
]


def test_batched_equals_one_at_a_time(tiny_backend):
    batched = tiny_backend.loglikelihood(REQUESTS)
    single = [tiny_backend.loglikelihood([r])[0] for r in REQUESTS]
    for a, b in zip(batched, single, strict=False):
        assert a.num_tokens == b.num_tokens
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5)


def test_matches_a_plain_full_forward(tiny_backend):
    """Projection at continuation positions only must equal the model's own full logits."""
    request = REQUESTS[1]
    ctx, cont = tiny_backend.encoder.encode_pair(request.context, request.continuation)
    ids = torch.tensor([ctx.ids + cont])
    with torch.inference_mode():
        logits = tiny_backend.model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    expected = sum(float(logprobs[len(ctx.ids) - 1 + i, t]) for i, t in enumerate(cont))
    assert tiny_backend.loglikelihood([request])[0].logprob == pytest.approx(expected, abs=1e-5)


def test_logprobs_are_negative_and_finite(tiny_backend):
    for response in tiny_backend.loglikelihood(REQUESTS):
        assert math.isfinite(response.logprob) and response.logprob < 0


def test_overlong_prompt_is_left_truncated(stories_backend):
    long = LoglikelihoodRequest("Once upon a time there was a cat. " * 200, " The end", protected_chars=10)
    (response,) = stories_backend.loglikelihood([long])
    assert response.truncated and not response.truncated_document


def test_same_seed_same_results(tiny_backend):
    from evalharness import evaluate

    first = evaluate(tiny_backend, ["mmlu_anatomy", "mmlu_virology"], limit=3, data_dir=str(DATA), seed=7)
    second = evaluate(tiny_backend, ["mmlu_anatomy", "mmlu_virology"], limit=3, data_dir=str(DATA), seed=7)
    assert first.samples == second.samples
    assert first.results["tasks"] == second.results["tasks"]


def _mmlu_requests(subtasks=("mmlu_anatomy", "mmlu_virology"), docs=6):
    from evalharness.core.prompt_render import PromptRenderer
    from evalharness.core.task_selection import resolve
    from evalharness.data.source import DataSource

    data, renderer, requests = DataSource(DATA), PromptRenderer(), []
    for selection in resolve(list(subtasks)):
        for subtask in selection.subtasks:
            pool = selection.task.fewshot_pool(data, subtask)
            for doc in selection.task.documents(data, subtask)[:docs]:
                prompt = renderer.build(selection.task, doc, pool[:5])
                requests += selection.task.requests(doc, prompt)
    return requests


@pytest.mark.parametrize("backend_name", ["tiny_backend", "stories_backend"])
def test_shared_prefix_reuse_changes_nothing(request, backend_name):
    from evalharness.backends.hf import loglikelihood

    backend = request.getfixturevalue(backend_name)
    requests = _mmlu_requests() + REQUESTS[:2]
    prepared = loglikelihood.prepare(backend.encoder, requests, backend.max_length)
    batches = loglikelihood.plan(prepared, backend.rows_per_batch)
    if not any(p.truncated for p in prepared):  # left-truncated windows share no prefix
        assert any(len(b.prefix) >= 100 for b in batches)  # the 5-shot prefixes were found
    with_reuse = backend.loglikelihood(requests)
    backend.reuse_prefixes = False
    try:
        without = backend.loglikelihood(requests)
    finally:
        backend.reuse_prefixes = True
    assert max(abs(a.logprob - b.logprob) for a, b in zip(with_reuse, without, strict=False)) < 1e-5
    assert [a.is_greedy for a in with_reuse] == [b.is_greedy for b in without]
