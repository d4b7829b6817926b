"""Batched generation on real tiny models (no mocks): stopping, parity, seeding, truncation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evalharness.backends.hf.backend import HFBackend
from evalharness.backends.hf.clusters import weight_first_projection
from evalharness.backends.hf.loader import ModelConfig
from evalharness.backends.hf.slots import Slots
from evalharness.core.errors import EvalHarnessError
from evalharness.core.requests import GenerateRequest, GenerateResponse, SamplingParams
from tests.conftest import MODELS, STORIES
from tests.conftest import TINY_LLAMA as RANDOM_LLAMA

pytestmark = pytest.mark.skipif(
    not (STORIES.is_dir() and RANDOM_LLAMA.is_dir()), reason=f"tiny models not found in {MODELS}"
)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # These models are tiny: one thread is as fast, and two OpenMP threads sharing a busy
    # 2-core CI box with another process can run 10x slower.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# On CPU in float32, so the exact batched == unbatched and seeded-sampling checks hold anywhere.
@pytest.fixture(scope="module")
def stories() -> HFBackend:
    # stories260K ends a story with id 1 (BOS), as in llama2.c, though its config says 2.
    config = ModelConfig(str(STORIES), device="cpu", model_args={"eos_token_id": 1})
    return HFBackend(config, batch_size=4)


@pytest.fixture(scope="module")
def random_llama() -> HFBackend:
    return HFBackend(ModelConfig(str(RANDOM_LLAMA), device="cpu"), batch_size=4)


def greedy(context: str, max_new_tokens: int = 64, stop: tuple[str, ...] = ()) -> GenerateRequest:
    return GenerateRequest(context, stop=stop, sampling=SamplingParams(max_new_tokens))


def sampled(context: str, seed: int, max_new_tokens: int = 48) -> GenerateRequest:
    params = SamplingParams(max_new_tokens, temperature=0.8, top_p=0.9, do_sample=True, seed=seed)
    return GenerateRequest(context, sampling=params)


def one_at_a_time(
    backend: HFBackend, requests: list[GenerateRequest], monkeypatch: pytest.MonkeyPatch
) -> list[GenerateResponse]:
    with monkeypatch.context() as patch:
        patch.setattr(backend, "rows_per_batch", 1)
        return backend.generate(requests)


def test_greedy_story_stops_at_eos(stories: HFBackend) -> None:
    (response,) = stories.generate([greedy("Once upon a time", max_new_tokens=400)])
    assert response.finish_reason == "eos"
    assert 20 < response.num_tokens < 400
    assert response.text.startswith(", there was a little girl")
    assert not response.truncated and not response.truncated_document


def test_greedy_matches_transformers_generate(stories: HFBackend) -> None:
    import torch

    prompt = stories.encoder.encode_context("Lily had a dog", 0).ids
    reference = stories.model.generate(
        torch.tensor([prompt]), max_new_tokens=40, do_sample=False, eos_token_id=1, pad_token_id=1
    )[0, len(prompt) :]
    (response,) = stories.generate([greedy("Lily had a dog", max_new_tokens=40)])
    assert response.text == stories.tokenizer.decode(reference, skip_special_tokens=True)


def test_max_new_tokens(stories: HFBackend) -> None:
    (response,) = stories.generate([greedy("Once upon a time", max_new_tokens=7)])
    assert (response.finish_reason, response.num_tokens) == ("length", 7)
    assert response.text


def test_ignore_eos_runs_to_the_limit(stories: HFBackend) -> None:
    params = SamplingParams(max_new_tokens=450, ignore_eos=True)
    (response,) = stories.generate([GenerateRequest("Once upon a time", sampling=params)])
    assert (response.finish_reason, response.num_tokens) == ("length", 450)


def test_stop_string_cuts_output(stories: HFBackend) -> None:
    (full,) = stories.generate([greedy("Once upon a time", max_new_tokens=60)])
    word = full.text.split()[6]
    (cut,) = stories.generate([greedy("Once upon a time", max_new_tokens=60, stop=("zzz", word))])
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(word)]
    assert word not in cut.text
    assert 0 < cut.num_tokens < full.num_tokens


def test_batched_equals_one_at_a_time(
    stories: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = [
        greedy("Once upon a time", 400),
        greedy("Tom", 30),
        greedy("Lily had a dog", 400, stop=("park",)),
        greedy("The sun was hot and the boy wanted to play outside with his", 400),
        greedy("Tom", 400, stop=("\n",)),
        greedy("One day, a little bird", 30, stop=(".",)),
        greedy("Sue", 400),
        greedy("Once upon a time", 12),
        greedy("Ben and Mia went to the", 400, stop=("happy", "sad")),
    ]
    batched = stories.generate(requests)
    assert batched == one_at_a_time(stories, requests, monkeypatch)
    # The batch mixes rows that leave early (stop, EOS) with rows that run on.
    assert {r.finish_reason for r in batched} == {"eos", "stop", "length"}


def test_default_decode_batch_is_sized_from_memory(
    stories: HFBackend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    backend = HFBackend(stories.config)  # no batch size: scoring 8, decoding from memory
    assert backend.rows_per_batch == 8
    decode_rows = backend.decoder.decode_rows
    assert callable(decode_rows) and decode_rows(512) == 64  # a 260K model: memory is no limit, the cap is
    requests = [greedy(f"Once upon a time there was a {word}", 40) for word in ("dog", "cat", "bird") * 7]
    with caplog.at_level("DEBUG", logger="evalharness.backends.hf.generation"):
        together = backend.generate(requests)
    assert "21 requests, up to 64 at once" in caplog.text
    assert together == one_at_a_time(backend, requests, monkeypatch)
    backend.rows_per_batch = 2  # an explicit batch size sets decoding too
    assert backend.decoder.decode_rows == 2


def test_seeded_sampling_is_reproducible(stories: HFBackend) -> None:
    alone = stories.generate([sampled("Once upon a time", seed=7)])[0]
    again = stories.generate([sampled("Once upon a time", seed=7)])[0]
    mates = stories.generate(
        [sampled("Tom", seed=1), sampled("Once upon a time", seed=7), sampled("A big dog", seed=2)]
    )
    assert alone == again == mates[1]
    others = stories.generate([sampled("Once upon a time", seed=s) for s in range(8, 14)])
    assert any(r.text != alone.text for r in others)


def test_random_llama_batched_equals_one_at_a_time(
    random_llama: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = ["Hello world", "The capital of France is a city", "a", "Once upon a time there was"]
    requests = [greedy(p, 20) for p in prompts] + [greedy("Hello world", 9, stop=("spect",))]
    batched = random_llama.generate(requests)
    assert batched == one_at_a_time(random_llama, requests, monkeypatch)
    assert [r.num_tokens for r in batched[:4]] == [20] * 4


def test_long_prompt_is_left_truncated(stories: HFBackend) -> None:
    context = "Once upon a time there was a girl. " * 80 + "She liked"
    assert len(stories.encoder.encode_context(context, 0).ids) > stories.max_length
    few_shot, document = stories.generate(
        [
            greedy(context, max_new_tokens=16),
            GenerateRequest(context, sampling=SamplingParams(16), protected_chars=len(context)),
        ]
    )
    assert few_shot.truncated and not few_shot.truncated_document
    assert document.truncated and document.truncated_document
    assert few_shot.num_tokens > 0


def test_max_new_tokens_must_leave_room_for_the_prompt(stories: HFBackend) -> None:
    with pytest.raises(EvalHarnessError, match="max_new_tokens=512"):
        stories.generate([greedy("Once upon a time", max_new_tokens=512)])
    assert stories.generate([]) == []


def test_shared_prefix_reuse_gives_identical_generations(stories: HFBackend) -> None:
    """Few-shot prompts share a long head; computing it once must not change any output."""
    head = "Once upon a time there was a little girl named Lily. She liked to play in the park. " * 2
    requests = [
        greedy(head + tail, max_new_tokens=40, stop=stop)
        for tail, stop in [("One day", ()), ("Then her mom said", (".",)), ("The sun", ()), ("Tom", ("!",))]
    ] + [sampled(head + "Later", seed=3)]
    assert len(stories.encoder.encode_context(head, 0).ids) > 40
    with_reuse = stories.generate(requests)
    stories.reuse_prefixes = False
    try:
        without = stories.generate(requests)
    finally:
        stories.reuse_prefixes = True
    assert [r.text for r in with_reuse] == [r.text for r in without]
    assert [r.finish_reason for r in with_reuse] == [r.finish_reason for r in without]


def test_continuous_batching_refills_free_slots(stories: HFBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two slots, two long rows and four that stop at once: while one long row runs, the short
    ones pass through the other slot and the second long row joins — far fewer forward passes
    than batches that wait for their longest row, and the same outputs as one at a time."""
    long = SamplingParams(60, ignore_eos=True)
    requests = [
        GenerateRequest("Once upon a time there was a girl who liked to play in the park", sampling=long),
        *[GenerateRequest(f"The dog {word} and", stop=(" ",), sampling=long) for word in ("ran", "sat", "ate", "hid")],
        GenerateRequest("Tom", sampling=long),
    ]
    calls = []
    forward = stories.model.forward
    placed: list[list[int]] = []
    place = Slots.place

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return forward(*args, **kwargs)

    def placing(slots: Slots, other: Slots, at: list[int]) -> None:
        placed.append(list(at))
        place(slots, other, at)

    with monkeypatch.context() as patch:
        patch.setattr(stories, "rows_per_batch", 2)
        patch.setattr(stories.model, "forward", counting)
        patch.setattr(Slots, "place", placing)
        together = stories.generate(requests)
    # Newcomers were written over finished rows' slots, not appended to a copied batch.
    assert len(placed) >= 3
    assert [r.num_tokens for r in together][::5] == [60, 60]
    assert all(r.finish_reason == "stop" for r in together[1:5])
    # Static batches of two would take about 60 + 3 + 60 steps; refilling takes about 60 + 8.
    assert len(calls) < 90
    assert together == one_at_a_time(stories, requests, monkeypatch)


def test_weight_first_projection_gives_the_heads_logits(stories: HFBackend) -> None:
    import torch

    head = stories.model.get_output_embeddings()
    hidden = torch.randn(5, 1, head.in_features, generator=torch.Generator().manual_seed(0))
    expected = head(hidden)
    with weight_first_projection(stories.model, "cpu"):
        assert "forward" in vars(head)  # a plain nn.Linear head: W @ x.T is in use
        inside = head(hidden)
    assert inside.shape == expected.shape
    assert torch.allclose(inside, expected, atol=1e-5)
    assert "forward" not in vars(head)  # the module's own forward is back


def test_stop_string_split_over_many_tokens_is_found(stories: HFBackend) -> None:
    """The stop check reads only a decoded tail; a stop string spanning several tokens is still
    cut exactly where the full text first contains it."""
    (full,) = stories.generate([greedy("Once upon a time", max_new_tokens=60)])
    words = full.text.split()
    stop = " ".join(words[3:6])  # several tokens long
    (cut,) = stories.generate([greedy("Once upon a time", max_new_tokens=60, stop=(stop,))])
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index(stop)]
