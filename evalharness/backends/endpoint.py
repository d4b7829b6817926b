"""A managed online endpoint (Azure ML style) as a backend: ``--model endpoint:<scoring-url>``.

The deployment speaks one JSON schema, generation only:

    request:  {"input_data": {"input_string": [prompt, ...], "parameters": {"max_new_tokens": N,
               "do_sample": bool, "return_full_text": false, "temperature": t, "top_p": p}}}
    response: [{"0": "generated text"}, ...]   (one per prompt, in order)

- Greedy requests send ``do_sample: false`` without temperature or top_p (some servers refuse a
  temperature of 0); sampled ones send both, and top_k when set.
- The schema has no log-probabilities: a log-likelihood task is refused before any request is sent.
- It has no stop sequences and no seed: stop strings are cut here, at the first one as the local
  backend cuts, and sampled generations are not reproducible. The fingerprint says both.
- It does not say how many tokens were generated nor why generation ended: responses carry 0
  tokens and finish reason "stop" (a stop string was cut here) or "" (not known).
- The key is read from ``$EVALHARNESS_ENDPOINT_KEY`` (or the variable ``--model-args
  key_env=NAME`` names) and sent as a bearer token; it is never logged, nor written to the
  fingerprint or results. ``--model-args deployment=NAME`` adds ``azureml-model-deployment``.
- Prompts with the same parameters go ``batch_size`` to a call, ``concurrency`` calls in flight,
  through openai_http's ServerPool (retries, backoff, failover over comma-separated URLs).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evalharness.backends.openai_http import ServerError, ServerPool
from evalharness.backends.protocol import Resume
from evalharness.backends.registry import register_backend
from evalharness.backends.remote_jobs import Job, chunks, cut_at_stop, refuse_local_settings, run_jobs
from evalharness.core.errors import EvalHarnessError
from evalharness.core.requests import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    Request,
)

log = logging.getLogger(__name__)

DEFAULT_KEY_ENV = "EVALHARNESS_ENDPOINT_KEY"
MODEL_ARGS = {"key_env": "the environment variable holding the key", "deployment": "the deployment's name"}
NO_LOGPROBS = "the endpoint schema returns no log-probabilities"


def scoring_urls(text: str) -> tuple[str, ...]:
    urls = tuple(dict.fromkeys(u.strip() for u in text.split(",") if u.strip()))
    if not urls:
        raise EvalHarnessError("the endpoint backend needs a scoring URL: --model endpoint:https://HOST/score")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise EvalHarnessError(f"endpoint scoring URL {url!r}: expected http(s)://HOST/PATH")
    return urls


def read_key(key_env: str | None) -> str | None:
    """The key from the environment; a variable named explicitly must be set."""
    name = key_env or DEFAULT_KEY_ENV
    key = os.environ.get(name, "").strip()
    if not key and key_env:
        raise EvalHarnessError(f"--model-args key_env={name}: ${name} is not set (it holds the endpoint's key)")
    if not key:
        log.warning("$%s is not set: calling the endpoint without a key", name)
    return key or None


def parameters(request: GenerateRequest) -> dict[str, Any]:
    sampling = request.sampling
    params: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens, "do_sample": not sampling.greedy, "return_full_text": False,
    }  # fmt: skip
    if not sampling.greedy:
        params.update(temperature=sampling.temperature, top_p=sampling.top_p)
        if sampling.top_k:
            params["top_k"] = sampling.top_k
    return params


class EndpointBackend:
    def __init__(
        self,
        url: str,
        concurrency: int = 8,
        batch_size: int = 8,
        timeout_s: float = 600.0,
        max_retries: int = 6,
        key_env: str | None = None,
        deployment: str | None = None,
    ) -> None:
        if concurrency < 1 or batch_size < 1:
            raise EvalHarnessError("--concurrency and --batch-size must be at least 1 for the endpoint backend")
        self.url = url
        self.key_env = key_env or DEFAULT_KEY_ENV
        headers = {"azureml-model-deployment": deployment} if deployment else {}
        key = read_key(key_env)
        self.pool = ServerPool(scoring_urls(url), timeout_s, max_retries, api_key=key, headers=headers)
        self.deployment = deployment
        self.concurrency = concurrency
        self.batch_size = batch_size

    def refusal(self, task: str, request: Request) -> str | None:
        if isinstance(request, LoglikelihoodRequest):
            return f"{NO_LOGPROBS}; task {task} needs them"
        if request.sampling.ignore_eos:
            return f"the endpoint schema cannot ignore EOS; task {task} asks for it"
        return None

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], resume: Resume[LoglikelihoodResponse] | None = None
    ) -> list[LoglikelihoodResponse]:
        if requests:
            raise EvalHarnessError(f"{NO_LOGPROBS}; log-likelihood requests need them")
        return []

    def _call(self, prompts: list[str], params: dict[str, Any]) -> list[str]:
        payload = {"input_data": {"input_string": prompts, "parameters": params}}
        try:
            reply = self.pool.call("", payload)
        except ServerError as exc:
            if exc.status in (401, 403):
                raise ServerError(f"{exc} (the endpoint refused the key in ${self.key_env})", exc.status) from None
            raise
        if not isinstance(reply, list) or len(reply) != len(prompts):
            got = f"{len(reply)} items" if isinstance(reply, list) else type(reply).__name__
            raise EvalHarnessError(f'the endpoint answered {got} for {len(prompts)} prompts; expected a list of {{"0": text}}')
        texts = [item.get("0") if isinstance(item, dict) else None for item in reply]
        if not all(isinstance(t, str) for t in texts):
            raise EvalHarnessError(f'the endpoint answered {str(reply)[:200]}; expected a list of {{"0": text}}')
        return [str(t) for t in texts]

    def generate(self, requests: Sequence[GenerateRequest], resume: Resume[GenerateResponse] | None = None) -> list[GenerateResponse]:
        if not requests:
            return []
        resume = resume or Resume()
        if any(r.sampling.ignore_eos for r in requests):
            raise EvalHarnessError("the endpoint schema cannot ignore EOS (ignore_eos)")
        groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
        for i, request in enumerate(requests):
            if i not in resume.done:
                params = parameters(request)
                groups.setdefault(repr(sorted(params.items())), (params, []))[1].append(i)

        def job(params: dict[str, Any], indices: list[int]) -> Callable[[], list[GenerateResponse]]:
            def run() -> list[GenerateResponse]:
                texts = self._call([requests[i].context for i in indices], params)
                responses = []
                for i, text in zip(indices, texts, strict=True):
                    cut, stopped = cut_at_stop(text, requests[i].stop)
                    responses.append(GenerateResponse(cut, 0, "stop" if stopped else ""))
                return responses

            return run

        jobs: list[Job[GenerateResponse]] = [
            (chunk, job(params, chunk)) for params, indices in groups.values() for chunk in chunks(indices, self.batch_size)
        ]
        results = dict(resume.done)
        results.update(run_jobs(jobs, resume, self.concurrency, "generate"))
        return [results[i] for i in range(len(requests))]

    def fingerprint(self) -> dict[str, Any]:
        return {
            "backend": "endpoint",
            "model": self.url,
            "endpoint": {"urls": list(self.pool.urls), "deployment": self.deployment},
            "schema": "input_data.input_string -> [{'0': text}]",
            "decoding": {
                "stop": "cut client-side at the first stop string (the schema has none)",
                "seed": "not sent (the schema has none): sampled generations are not reproducible",
            },
        }


ENDPOINT_OPTIONS = frozenset(
    {"concurrency", "batch_size", "timeout", "max_retries", "model_args", "device", "dtype", "max_length",
     "trust_remote_code"}
)  # fmt: skip


@register_backend("endpoint", ENDPOINT_OPTIONS, "a managed online endpoint (Azure ML schema): endpoint:<scoring-url>")
def build_endpoint(model: str, options: Mapping[str, Any]) -> EndpointBackend:
    # The deployment owns device, dtype and context length; the CLI passes its defaults for them.
    refuse_local_settings(options, "deployment", "endpoint")
    for name in ("max_length", "trust_remote_code"):
        if options.get(name):
            raise EvalHarnessError(f"--{name.replace('_', '-')} is the deployment's choice, not the endpoint backend's")
    model_args = dict(options.get("model_args") or {})
    for key, value in model_args.items():
        if key not in MODEL_ARGS:
            known = ", ".join(f"{k} ({v})" for k, v in MODEL_ARGS.items())
            raise EvalHarnessError(f"--model-args: the endpoint backend has no key {key!r}; known: {known}")
        if not isinstance(value, str) or not value:
            raise EvalHarnessError(f"--model-args {key}={value!r}: expected {MODEL_ARGS[key]}")
    batch = options.get("batch_size") or 8
    return EndpointBackend(
        model,
        concurrency=int(options.get("concurrency") or 8),
        batch_size=8 if batch == "auto" else int(batch),
        timeout_s=float(options.get("timeout") or 600.0),
        max_retries=int(options.get("max_retries", 6)),
        key_env=model_args.get("key_env"),
        deployment=model_args.get("deployment"),
    )
