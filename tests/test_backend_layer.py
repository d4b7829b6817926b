"""The backend layer: a second, minimal backend gets the cache, resume and the truncation rules
without anything Hugging Face-specific in the runner, cache or fitting code.

``ForwardOnly`` is a test double for "another backend": it implements the 3-method protocol
itself, fitting prompts with the shared ``prompt_fitting`` rules (only a tokenizer is needed)
and scoring with one plain forward pass per request on the real tiny model — no batching, no
prefix reuse, none of the local backend's machinery. Generation is relayed to the local backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from evalharness.backends.prompt_fitting import Encoder
from evalharness.backends.protocol import Backend, Resume
from evalharness.core.requests import GenerateRequest, GenerateResponse, LoglikelihoodRequest, LoglikelihoodResponse
from tests.conftest import DATA

MAX_LENGTH = 160  # short: MMLU's 5-shot prompts overflow it, so the truncation rules run


class ForwardOnly:
    def __init__(self, local: Any) -> None:
        self.local, self.model = local, local.model
        self.encoder = Encoder(local.tokenizer)
        self.scored: list[int] = []  # how many requests each call actually computed

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], resume: Resume[LoglikelihoodResponse] | None = None
    ) -> list[LoglikelihoodResponse]:
        import torch

        resume = resume or Resume()
        out: dict[int, LoglikelihoodResponse] = dict(resume.done)
        todo = [i for i in range(len(requests)) if i not in out]
        for i in todo:
            request = requests[i]
            context, continuation = self.encoder.encode_pair(request.context, request.continuation, request.protected_chars)
            window = self.encoder.fit(context, MAX_LENGTH - len(continuation) + 1)
            ids = torch.tensor([window.ids + continuation])
            with torch.inference_mode():
                logprobs = self.model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            targets = ids[0, len(window.ids):]
            picked = logprobs[len(window.ids) - 1:].gather(-1, targets[:, None])[:, 0]
            greedy = bool((logprobs[len(window.ids) - 1:].argmax(-1) == targets).all())
            out[i] = LoglikelihoodResponse(float(picked.sum()), greedy, len(continuation),
                                           window.truncated, window.truncated_document)
            resume.finished([i], [out[i]])
        self.scored.append(len(todo))
        return [out[i] for i in range(len(requests))]

    def generate(
        self, requests: Sequence[GenerateRequest], resume: Resume[GenerateResponse] | None = None
    ) -> list[GenerateResponse]:
        return self.local.generate(requests, resume)

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": "forward-only", "model": "tiny-random-llama2", "max_length": MAX_LENGTH}


@pytest.fixture(scope="module")
def local_short(tiny_backend):
    from evalharness.backends.hf import HFBackend

    return HFBackend(tiny_backend.config, batch_size=4, max_length=MAX_LENGTH)


TASKS = ["mmlu_anatomy", "mmlu_virology"]


def test_a_second_backend_implements_the_protocol(tiny_backend):
    assert isinstance(ForwardOnly(tiny_backend), Backend)


def test_second_backend_matches_the_local_one_with_the_same_truncation(local_short, tmp_path):
    from evalharness import evaluate

    ours = evaluate(ForwardOnly(local_short), TASKS, limit=3, data_dir=str(DATA), cache_path=None)
    local = evaluate(local_short, TASKS, limit=3, data_dir=str(DATA), cache_path=None)
    a, b = ours.results["tasks"]["mmlu"], local.results["tasks"]["mmlu"]
    assert a["truncated_documents"] == b["truncated_documents"] == 6  # every prompt overflowed
    assert [s["prediction"] for s in ours.samples] == [s["prediction"] for s in local.samples]
    for x, y in zip(ours.samples, local.samples, strict=False):
        assert x["prompt_hash"] == y["prompt_hash"]
        assert x["output"] == pytest.approx(y["output"], abs=1e-4)


def test_cache_and_resume_work_for_any_backend(local_short, tmp_path):
    from evalharness import evaluate

    cache = str(tmp_path / "cache.sqlite")
    whole = evaluate(ForwardOnly(local_short), TASKS, limit=3, data_dir=str(DATA), cache_path=None)
    # A first run that stopped early (2 of 3 documents per subject), then the full run: only the
    # missing documents' requests are computed, and the result equals an uninterrupted run.
    first = ForwardOnly(local_short)
    evaluate(first, TASKS, limit=2, data_dir=str(DATA), cache_path=cache)
    assert first.scored == [16]  # 2 subjects × 2 documents × 4 letters
    resumed = ForwardOnly(local_short)
    again = evaluate(resumed, TASKS, limit=3, data_dir=str(DATA), cache_path=cache)
    assert resumed.scored == [8]  # only the third document of each subject
    assert again.results["cache"]["hits"] == 16
    assert again.results["tasks"]["mmlu"]["metrics"] == whole.results["tasks"]["mmlu"]["metrics"]
    assert [s["output"] for s in again.samples] == [s["output"] for s in whole.samples]
    # Everything cached: the backend is not asked at all.
    idle = ForwardOnly(local_short)
    evaluate(idle, TASKS, limit=3, data_dir=str(DATA), cache_path=cache)
    assert idle.scored == []


def test_backend_registry_picks_and_checks_settings():
    from evalharness.backends.registry import build_backend, split_model
    from evalharness.core.errors import EvalHarnessError, UnknownNameError

    assert split_model("meta-llama/Llama-2-7b-hf", None) == ("hf", "meta-llama/Llama-2-7b-hf")
    assert split_model("hf:./folder", None) == ("hf", "./folder")
    assert split_model("C:/models/x", None) == ("hf", "C:/models/x")  # not a backend prefix
    with pytest.raises(UnknownNameError, match="did you mean: hf"):
        split_model("x", "hff")
    with pytest.raises(EvalHarnessError, match="did you mean: batch_size"):
        build_backend("hf", "x", {"batch_sise": 4})
