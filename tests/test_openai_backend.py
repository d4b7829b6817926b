"""The openai backend: against a stub server (errors, retries, failover) and a real vLLM server.

The vLLM part starts two replicas of SmolLM2-135M-Instruct once per session (tests/vllm_server.py;
the first run on a machine also builds the venv and the model folder, about 3 minutes). Where vLLM
cannot be installed the real-server tests skip with the reason; with EVALHARNESS_REQUIRE_VLLM=1
(.ci/run sets it) they fail instead.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from evalharness.backends.openai_compat import OpenAIBackend
from evalharness.backends.openai_http import ServerError, Unreachable
from evalharness.backends.protocol import Backend, Resume
from evalharness.core.errors import EvalHarnessError
from evalharness.core.requests import GenerateRequest, LoglikelihoodRequest, SamplingParams
from tests.conftest import DATA, LLAMA_TOKENIZER, run_cli

# -- a stub server -----------------------------------------------------------------------------


class Stub:
    """An OpenAI-shaped server whose answers a test scripts: ``fail`` 5xx answers first, then ok."""

    def __init__(self, model: str = "stub", fail: int = 0, status: int = 500, logprobs: bool = True, bos: bool = False):
        self.model, self.fail, self.status, self.logprobs, self.bos = model, fail, status, logprobs, bos
        self.completions = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": stub.model, "max_model_len": 256}]})

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/completions":  # no /tokenize, no chat
                    self._send(404, {"detail": "Not Found"})
                    return
                stub.completions += 1
                if stub.fail > 0:
                    stub.fail -= 1
                    self._send(stub.status, {"error": {"message": "engine overloaded"}})
                    return
                choices = []
                prompts = payload["prompt"] if isinstance(payload["prompt"][0], list) else [payload["prompt"]]
                for i, prompt in enumerate(prompts):
                    n = len(prompt) + (1 if stub.bos else 0)
                    values = [None] + [-0.5] * (n - 1)
                    tops = [None] + [{"x": -0.5}] * (n - 1)
                    lp = {"token_logprobs": values, "top_logprobs": tops} if stub.logprobs else None
                    choices.append({"index": i, "text": "", "logprobs": lp, "finish_reason": "length"})
                self._send(200, {"choices": choices, "usage": {"completion_tokens": 0}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stub_backend(url: str, **kwargs: Any) -> OpenAIBackend:
    kwargs.setdefault("max_retries", 3)
    return OpenAIBackend("stub", url, tokenizer=str(LLAMA_TOKENIZER), **kwargs)


REQ = LoglikelihoodRequest("The capital of France is", " Paris")


def test_implements_the_protocol(stub: Stub) -> None:
    from evalharness.backends.registry import build_backend, split_model

    assert split_model("openai:smollm2", None) == ("openai", "smollm2")
    with pytest.raises(EvalHarnessError, match="did you mean: base_url"):
        build_backend("openai", "stub", {"base_ur": stub.url})
    backend = stub_backend(stub.url)
    assert isinstance(backend, Backend)
    assert backend.max_length == 256


def test_wrong_model_name_is_one_clear_line(stub: Stub) -> None:
    with pytest.raises(EvalHarnessError, match=r"serves \['stub'\], not 'llama'") as err:
        OpenAIBackend("llama", stub.url, tokenizer=str(LLAMA_TOKENIZER))
    assert "\n" not in str(err.value)


def test_unreachable_server_is_one_clear_line() -> None:
    with pytest.raises(Unreachable, match=r"no server answers /v1/models \(http://127.0.0.1:\d+: .*refused"):
        stub_backend(f"http://127.0.0.1:{free_port()}")


def test_500_answers_are_retried_with_backoff(stub: Stub) -> None:
    backend = stub_backend(stub.url)
    backend.pool.backoff_s = 0.05
    stub.fail = 2
    got = backend.loglikelihood([REQ])
    assert stub.completions == 3
    assert got[0].logprob == pytest.approx(-0.5 * got[0].num_tokens)


def test_persistent_500_gives_up_with_the_servers_message(stub: Stub) -> None:
    backend = stub_backend(stub.url, max_retries=2)
    backend.pool.backoff_s = 0.01
    stub.fail = 100
    with pytest.raises(Unreachable, match=r"answered 500: engine overloaded \(gave up after 3 attempts\)"):
        backend.loglikelihood([REQ])


def test_a_client_error_is_not_retried(stub: Stub) -> None:
    backend = stub_backend(stub.url)
    stub.fail, stub.status = 5, 400
    with pytest.raises(ServerError, match="answered 400: engine overloaded"):
        backend.loglikelihood([REQ])
    assert stub.completions == 1


def test_no_prompt_logprobs_is_a_clear_error(stub: Stub) -> None:
    stub.logprobs = False
    with pytest.raises(EvalHarnessError, match="no prompt log-probabilities"):
        stub_backend(stub.url).loglikelihood([REQ])


def test_a_leading_bos_in_the_echo_is_skipped(stub: Stub) -> None:
    plain = stub_backend(stub.url).loglikelihood([REQ])
    stub.bos = True
    assert stub_backend(stub.url).loglikelihood([REQ]) == plain


def test_a_dead_replica_fails_over_to_a_live_one(stub: Stub) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    backend = stub_backend(stub.url)
    backend.pool.urls = (dead, stub.url)  # died after the start-up check
    got = backend.loglikelihood([REQ, LoglikelihoodRequest("Hello", " world")])
    assert len(got) == 2 and backend.pool.calls[stub.url] >= 1 and backend.pool.failures[dead] >= 1


def test_the_fingerprint_leaves_the_urls_out(stub: Stub) -> None:
    other = Stub()
    try:
        one, two = stub_backend(stub.url).fingerprint(), stub_backend(f"{stub.url},{other.url}").fingerprint()
    finally:
        other.close()
    assert one == two and "127.0.0.1" not in json.dumps(one)
    assert one["backend"] == "openai" and one["model"] == "stub" and one["tokenizer"]["size"] == 32000


def test_no_tokenizer_and_no_tokenize_endpoint_is_one_clear_line(stub: Stub) -> None:
    with pytest.raises(EvalHarnessError, match=r"no tokenizer for 'stub': the server does not tokenize \(.*answered 404") as err:
        OpenAIBackend("stub", stub.url)
    assert "\n" not in str(err.value) and str(err.value).endswith("pass --tokenizer PATH (the model's folder or hub id)")


def test_cli_runs_a_task_through_the_server(stub: Stub, tmp_path: Any) -> None:
    proc = run_cli("run", "--model", "openai:stub", "--base-url", f"{stub.url}/v1", "--tokenizer", str(LLAMA_TOKENIZER),
                   "--tasks", "mmlu_anatomy", "--limit", "2", "--data-dir", str(DATA), "--output", str(tmp_path),
                   "--no-cache", "--concurrency", "2", "--batch-size", "4")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["model"]["backend"] == "openai" and results["model"]["model"] == "stub"
    assert [t["n"] for t in results["tasks"].values()] == [2]
    assert stub.completions == 2  # 8 prompts, 4 to a call


def test_the_api_key_stays_out_of_the_results(stub: Stub) -> None:
    from evalharness import evaluate

    got = evaluate("openai:stub", "mmlu_anatomy", limit=1, base_url=stub.url, tokenizer=str(LLAMA_TOKENIZER),
                   api_key="sk-openai-5e1d", data_dir=str(DATA), cache_path=None)  # fmt: skip
    assert got.results["config"]["base_url"] == stub.url and "sk-openai-5e1d" not in json.dumps(got.results)


def test_cli_refuses_settings_that_belong_to_the_server(stub: Stub) -> None:
    proc = run_cli("run", "--model", "openai:stub", "--base-url", stub.url, "--tokenizer", str(LLAMA_TOKENIZER),
                   "--tasks", "mmlu_anatomy", "--limit", "1", "--data-dir", str(DATA), "--device", "cuda")  # fmt: skip
    assert proc.returncode == 2 and "--device is the server's choice" in proc.stderr.strip().splitlines()[-1]


# -- a real vLLM server ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vllm_model() -> Any:
    from tests import vllm_server

    try:
        return vllm_server.ensure_model()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("EVALHARNESS_REQUIRE_VLLM") == "1":
            raise
        pytest.skip(f"vLLM or SmolLM2 cannot be set up here: {exc}")


@pytest.fixture(scope="session")
def replicas(vllm_model: Any) -> Iterator[list[Any]]:
    """Two vLLM replicas of SmolLM2 on free ports, stopped by process group on every exit path."""
    from tests import vllm_server

    servers = []
    try:
        for _ in range(2):
            servers.append(vllm_server.Server(vllm_model, free_port()))
        started = time.monotonic()
        for server in servers:
            server.wait_ready(timeout_s=400)
        print(f"two vLLM replicas ready in {time.monotonic() - started:.0f} s")
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def remote(replicas: list[Any], vllm_model: Any) -> OpenAIBackend:
    urls = ",".join(s.url for s in replicas)
    return OpenAIBackend("smollm2", urls, tokenizer=str(vllm_model), concurrency=4, batch_size=4)


@pytest.fixture(scope="session")
def local(vllm_model: Any) -> Any:
    from evalharness.backends.hf import HFBackend
    from evalharness.backends.hf.loader import ModelConfig

    return HFBackend(ModelConfig(str(vllm_model), dtype="float32", device="cpu"), batch_size=8)


def task_requests(tasks: str, limit: int) -> list[Any]:
    from evalharness.core.prompt_render import PromptRenderer
    from evalharness.data.source import DataSource
    from evalharness.run.planning import plan
    from evalharness.run.settings import RunConfig

    config = RunConfig(tasks=tuple(tasks.split(",")), limit=limit, data_dir=str(DATA))
    return [r for doc in plan(config, DataSource(str(DATA)), PromptRenderer(None)) for r in doc.requests]


def test_real_server_wrong_model_name(replicas: list[Any], vllm_model: Any) -> None:
    with pytest.raises(EvalHarnessError, match=r"serves \['smollm2'\], not 'llama-2-7b'"):
        OpenAIBackend("llama-2-7b", replicas[0].url, tokenizer=str(vllm_model))


def test_loglikelihoods_match_transformers(remote: OpenAIBackend, local: Any) -> None:
    from evalharness import evaluate

    tasks = "mmlu_anatomy,truthfulqa_mc1,truthfulqa_mc2"
    ours = evaluate(remote, tasks, limit=2, data_dir=str(DATA), cache_path=None)
    theirs = evaluate(local, tasks, limit=2, data_dir=str(DATA), cache_path=None)
    worst = 0.0
    for a, b in zip(ours.samples, theirs.samples, strict=True):
        assert (a["task"], a["doc_id"]) == (b["task"], b["doc_id"])
        if isinstance(a["prediction"], float):  # MC2: the probability mass on the true answers
            assert a["prediction"] == pytest.approx(b["prediction"], abs=1e-3)
        else:
            assert a["prediction"] == b["prediction"]
        worst = max(worst, max(abs(x - y) for x, y in zip(_lls(a), _lls(b), strict=True)))
    print(f"largest log-likelihood difference vLLM vs transformers: {worst:.2e}")
    assert worst < 1e-3
    assert remote.pool.calls[remote.pool.urls[0]] > 0 and remote.pool.calls[remote.pool.urls[1]] > 0


def _lls(sample: dict[str, Any]) -> list[float]:
    out = sample["output"]
    return [float(v) for v in (out.values() if isinstance(out, dict) else out)]


def test_greedy_generation_matches_transformers(remote: OpenAIBackend, local: Any) -> None:
    requests = [
        GenerateRequest(r.context, r.stop, SamplingParams(max_new_tokens=16), r.protected_chars)
        for r in task_requests("gsm8k", 2)
    ]
    requests.append(GenerateRequest("The capital of France is", ("\n",), SamplingParams(max_new_tokens=16)))
    ours, theirs = remote.generate(requests), local.generate(requests)
    for a, b in zip(ours, theirs, strict=True):
        assert (a.text, a.finish_reason) == (b.text, b.finish_reason)
    assert ours[-1].text.startswith(" Paris")


PROMPTS = [
    "The capital of France is", " leading space", "two  spaces\n\nand blank lines\t", "Über naïve café — 東京 ١٢٣",
    "<|im_start|>user\nspecial tokens as text<|im_end|>", "x" * 300, "Answer: (A)",
]


def test_server_tokenize_gives_the_local_tokenizers_ids(replicas: list[Any], vllm_model: Any) -> None:
    from evalharness.backends.openai_http import ServerPool
    from evalharness.backends.prompt_fitting import Encoder, load_tokenizer
    from evalharness.backends.server_tokenizer import ServerEncoder

    served = ServerEncoder(ServerPool([replicas[0].url]), "smollm2", concurrency=4)
    local = Encoder(load_tokenizer(str(vllm_model)))
    contexts = [r.context for r in task_requests("mmlu_anatomy,gsm8k", 2)]
    assert served.encode_many(PROMPTS + contexts) == local.encode_many(PROMPTS + contexts)
    assert served.prefix_ids == local.prefix_ids == ()


def test_loglikelihoods_without_tokenizer_match_those_with_it(remote: OpenAIBackend, replicas: list[Any]) -> None:
    from evalharness import evaluate

    served = OpenAIBackend("smollm2", replicas[0].url, concurrency=4, batch_size=4)  # no --tokenizer
    assert served.tokenizer_source == "server /tokenize" and served.max_length == remote.max_length
    requests = [r for r in task_requests("mmlu_anatomy", 2) if isinstance(r, LoglikelihoodRequest)]
    assert [served._fit_scored(r) for r in requests] == [remote._fit_scored(r) for r in requests]
    ours = evaluate(served, "mmlu_anatomy", limit=2, data_dir=str(DATA), cache_path=None)
    theirs = evaluate(remote, "mmlu_anatomy", limit=2, data_dir=str(DATA), cache_path=None)
    for a, b in zip(ours.samples, theirs.samples, strict=True):
        assert a["prediction"] == b["prediction"]
        assert _lls(a) == pytest.approx(_lls(b), abs=1e-5)
    with pytest.raises(EvalHarnessError, match="--apply-chat-template with the openai backend needs the model's tokenizer"):
        served.chat_tokenizer()


def test_chat_generation_goes_to_the_chat_api_and_matches_transformers(remote: OpenAIBackend, local: Any) -> None:
    """The server applies its own chat template to the messages; transformers gets the same
    template rendered here. Log-likelihood under the template stays on /v1/completions."""
    from evalharness import evaluate
    from evalharness.core.chat_template import chat_wrapper
    from evalharness.core.prompt_render import PromptRenderer
    from evalharness.core.requests import ChatMessage

    settings = dict(limit=1, apply_chat_template=True, gen_kwargs={"max_new_tokens": 48}, data_dir=str(DATA), cache_path=None)
    before = dict(remote.pool.paths)
    ours = evaluate(remote, "gsm8k,mmlu_anatomy", **settings)
    theirs = evaluate(local, "gsm8k,mmlu_anatomy", **settings)
    assert remote.pool.paths["/v1/chat/completions"] - before.get("/v1/chat/completions", 0) == 1  # gsm8k
    assert remote.pool.paths["/v1/completions"] - before.get("/v1/completions", 0) == 1  # mmlu's 4 choices
    assert ours.samples[0]["prompt"].startswith("<|im_start|>system\n")  # SmolLM2's template, first token kept
    for a, b in zip(ours.samples, theirs.samples, strict=True):
        assert (a["task"], a["prediction"]) == (b["task"], b["prediction"])
        if a["task"] == "gsm8k":
            assert a["output"] == b["output"] and len(a["output"]) > 20
        else:
            assert _lls(a) == pytest.approx(_lls(b), abs=1e-3)
    # A stop string goes with the messages: the answer ends where transformers' does, for the same reason.
    wrapper = chat_wrapper(local.tokenizer, PromptRenderer())
    question = "Name the capital of France."
    requests = [
        GenerateRequest(wrapper.wrap(question), stop, SamplingParams(max_new_tokens=40), messages=(ChatMessage("user", question),))
        for stop in [("\n",), (" is", "\n")]  # SmolLM2: "The capital of France is Paris." and EOS
    ]
    got, expected = remote.generate(requests), local.generate(requests)
    assert [(r.text, r.finish_reason, r.num_tokens) for r in got] == [(r.text, r.finish_reason, r.num_tokens) for r in expected]
    assert got[0].finish_reason == "eos" and got[1].finish_reason == "stop"
    assert got[0].text.startswith(got[1].text + " is") and " is" not in got[1].text


def test_a_replica_killed_mid_run_leaves_the_work_to_the_other(remote: OpenAIBackend, replicas: list[Any]) -> None:
    requests = [r for r in task_requests("mmlu_anatomy", 6) if isinstance(r, LoglikelihoodRequest)]
    reference = remote.loglikelihood(requests)
    finished: list[int] = []

    def record(indices: Any, responses: Any) -> None:
        finished.extend(indices)
        if len(finished) == len(indices):  # after the first batch: kill the second replica
            replicas[1].stop()

    backend = OpenAIBackend(
        "smollm2", ",".join(s.url for s in replicas), tokenizer=remote.encoder.tokenizer.name_or_path,
        concurrency=2, batch_size=2,
    )
    got = backend.loglikelihood(requests, Resume(record=record))
    assert sorted(finished) == list(range(len(requests)))
    assert [g.is_greedy for g in got] == [r.is_greedy for r in reference]
    assert max(abs(g.logprob - r.logprob) for g, r in zip(got, reference, strict=True)) < 1e-4
    assert backend.pool.failures[replicas[1].url] >= 1
