"""The endpoint backend against a managed-endpoint stand-in that generates with the real
transformers backend (tiny-random-llama2): the Azure ML schema, a bearer key, client-side stops."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from evalharness.backends.endpoint import EndpointBackend
from evalharness.backends.openai_http import ServerError
from evalharness.core.errors import EvalHarnessError
from evalharness.core.requests import GenerateRequest, SamplingParams
from tests.conftest import DATA, run_cli

KEY = "sk-endpoint-7f3a9c1e5b"  # distinctive, so a leak anywhere is found by a plain search


class ManagedEndpoint:
    """``POST /score``: ``{"input_data": {"input_string": [...], "parameters": {...}}}`` → ``[{"0": text}]``,
    401 without ``Authorization: Bearer KEY``. One generation at a time (the backend is not thread-safe)."""

    def __init__(self, backend: Any, key: str = KEY) -> None:
        self.prompts = 0
        self.parameters: list[dict[str, Any]] = []
        lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/score" or self.headers.get("Authorization") != f"Bearer {key}":
                    self._send(401 if self.path == "/score" else 404, {"error": {"message": "invalid key"}})
                    return
                data = body["input_data"]
                params = data["parameters"]
                assert params["return_full_text"] is False
                sampling = SamplingParams(
                    max_new_tokens=params["max_new_tokens"], do_sample=params["do_sample"],
                    temperature=params.get("temperature", 0.0), top_p=params.get("top_p", 1.0),
                )  # fmt: skip
                with lock:
                    endpoint.prompts += len(data["input_string"])
                    endpoint.parameters.append(params)
                    made = backend.generate([GenerateRequest(p, (), sampling) for p in data["input_string"]])
                self._send(200, [{"0": r.text} for r in made])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/score"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(tiny_backend: Any) -> Iterator[ManagedEndpoint]:
    server = ManagedEndpoint(tiny_backend)
    yield server
    server.close()


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALHARNESS_ENDPOINT_KEY", KEY)


def run_endpoint(url: str, *args: str, key: str = KEY, debug: bool = False) -> Any:
    return run_cli(
        *(["--debug"] if debug else []), "run", "--model", f"endpoint:{url}", "--data-dir", str(DATA), "--no-cache", *args,
        env={"EVALHARNESS_ENDPOINT_KEY": key},
    )  # fmt: skip


def test_gsm8k_through_the_endpoint_matches_the_local_backend(endpoint: ManagedEndpoint, tiny_backend: Any, tmp_path: Path) -> None:
    from evalharness import evaluate

    short = "max_new_tokens=96"  # the card's 256 takes minutes on two shared cores
    args = ("--tasks", "gsm8k", "--limit", "3", "--gen-kwargs", short, "--output", str(tmp_path), "--batch-size", "2")
    proc = run_endpoint(endpoint.url, *args, debug=True)
    assert proc.returncode == 0, proc.stderr
    assert endpoint.prompts == 3 and len(endpoint.parameters) == 2  # 3 prompts, 2 to a call
    assert endpoint.parameters[0] == {"max_new_tokens": 96, "do_sample": False, "return_full_text": False}
    local = evaluate(tiny_backend, "gsm8k", limit=3, gen_kwargs={"max_new_tokens": 96}, data_dir=str(DATA), cache_path=None)
    remote = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [(s["output"], s["prediction"]) for s in remote] == [(s["output"], s["prediction"]) for s in local.samples]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["model"]["backend"] == "endpoint" and "client-side" in results["model"]["decoding"]["stop"]
    metrics = results["tasks"]["gsm8k"]["metrics"]
    assert {k: v["value"] for k, v in metrics.items()} == {k: v["value"] for k, v in local.results["tasks"]["gsm8k"]["metrics"].items()}
    # The key is in no file and no log line, --debug included.
    for text in [proc.stdout, proc.stderr, *(f.read_text() for f in tmp_path.rglob("*") if f.is_file())]:
        assert KEY not in text


def test_stop_strings_are_cut_as_the_local_backend_cuts(endpoint: ManagedEndpoint, tiny_backend: Any, keyed: None) -> None:
    prompt = "Once upon a time"
    full = tiny_backend.generate([GenerateRequest(prompt, (), SamplingParams(max_new_tokens=40))])[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 3]  # a string the model surely produces
    requests = [GenerateRequest(prompt, (stop, "never-produced"), SamplingParams(max_new_tokens=40))]
    local = tiny_backend.generate(requests)[0]
    remote = EndpointBackend(endpoint.url).generate(requests)[0]
    assert local.finish_reason == remote.finish_reason == "stop"
    assert remote.text == local.text == full[: full.index(stop)]


def test_sampled_requests_send_temperature_and_top_p(endpoint: ManagedEndpoint, keyed: None) -> None:
    sampling = SamplingParams(max_new_tokens=4, do_sample=True, temperature=0.7, top_p=0.9)
    EndpointBackend(endpoint.url).generate([GenerateRequest("Hello", (), sampling)])
    assert endpoint.parameters == [{"max_new_tokens": 4, "do_sample": True, "return_full_text": False, "temperature": 0.7, "top_p": 0.9}]


def test_a_wrong_key_is_one_clear_line(endpoint: ManagedEndpoint, tmp_path: Path) -> None:
    wrong = "sk-wrong-0d41b2"
    proc = run_endpoint(endpoint.url, "--tasks", "gsm8k", "--limit", "1", "--output", str(tmp_path), key=wrong)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "answered 401: invalid key" in last and "refused the key in $EVALHARNESS_ENDPOINT_KEY" in last
    assert wrong not in proc.stderr and endpoint.prompts == 0


def test_a_loglikelihood_task_is_refused_before_any_request(endpoint: ManagedEndpoint) -> None:
    proc = run_endpoint(endpoint.url, "--tasks", "mmlu_anatomy", "--limit", "1")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("evalharness: error: the endpoint schema returns no log-probabilities; task mmlu needs them")
    assert endpoint.prompts == 0 and endpoint.parameters == []


def test_the_key_variable_is_configurable(endpoint: ManagedEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    from evalharness.backends.registry import build_backend

    monkeypatch.delenv("EVALHARNESS_ENDPOINT_KEY", raising=False)
    monkeypatch.setenv("MY_DEPLOYMENT_KEY", KEY)
    backend = build_backend("endpoint", endpoint.url, {"model_args": {"key_env": "MY_DEPLOYMENT_KEY"}})
    assert backend.generate([GenerateRequest("Hi", (), SamplingParams(max_new_tokens=2))])[0].finish_reason == ""
    assert KEY not in json.dumps(backend.fingerprint())
    with pytest.raises(EvalHarnessError, match=r"key_env=UNSET_KEY_VAR: \$UNSET_KEY_VAR is not set"):
        build_backend("endpoint", endpoint.url, {"model_args": {"key_env": "UNSET_KEY_VAR"}})
    with pytest.raises(EvalHarnessError, match="no key 'deploy'"):
        build_backend("endpoint", endpoint.url, {"model_args": {"deploy": "blue"}})
    with pytest.raises(ServerError, match="answered 401"):  # no key at all: the server's refusal
        EndpointBackend(endpoint.url).generate([GenerateRequest("Hi", (), SamplingParams(max_new_tokens=2))])
