"""An OpenAI-compatible server as a backend (vLLM and friends): ``--model openai:<served-name>``.

- Log-likelihood: ``/v1/completions`` with ``echo: true, logprobs: 1, max_tokens: 0``. Prompts
  are fitted here with the model's own tokenizer (the shared prompt fitting: the same
  context/continuation split and left truncation as the local backend) and sent as token ids,
  so the echoed log-probabilities line up with our tokens one to one; a BOS the server adds in
  front is detected and skipped.
- Generation: ``/v1/completions`` with the token ids, stop strings and the request's sampling
  settings (temperature, top_p, top_k, seed, max_tokens, ignore_eos). A chat-templated request
  (--apply-chat-template) goes to ``/v1/chat/completions`` with its messages and the same
  settings, so the server applies its own template; one whose prompt overflows the context goes
  as the locally rendered, truncated ids instead (a chat message cannot be cut). Log-likelihood
  stays on ``/v1/completions`` with the local rendering: the chat API returns no prompt logprobs.
- Tokens: ``--tokenizer``; else the server's own ``/tokenize`` (``server_tokenizer``); else a
  local folder named by the served model or its root.
- Requests run concurrently (``concurrency`` threads), spread round robin over every base URL
  (replicas of one model), with retries, backoff and failover (``openai_http``).

Identical prompts share one call; distinct prompts go ``batch_size`` to a call. The server
decides device and dtype, so the fingerprint holds the served model (id and root), the tokenizer
and the context length, never the URLs: any replica answers for the same model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalharness.backends.openai_http import ServerPool, Unreachable, normalise_urls
from evalharness.backends.prompt_fitting import Encoder, Window, load_tokenizer
from evalharness.backends.protocol import Resume
from evalharness.backends.registry import register_backend
from evalharness.backends.remote_jobs import Job, chunks, refuse_local_settings, run_jobs
from evalharness.backends.server_tokenizer import ServerEncoder
from evalharness.core.errors import EvalHarnessError, ModelLoadError
from evalharness.core.requests import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """What ``/v1/models`` says about the served model (vLLM adds ``root`` and ``max_model_len``)."""

    id: str
    root: str | None
    max_model_len: int | None


def find_model(pool: ServerPool, name: str) -> ServedModel:
    """Check every replica serves ``name``; unreachable replicas are dropped with a warning."""
    found: ServedModel | None = None
    reachable = []
    problems = []
    for url in pool.urls:
        try:
            listing = pool.request(url, "/v1/models", timeout_s=30)
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable", said in one line
            problems.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        models = [m for m in listing.get("data", []) if isinstance(m, dict)]
        ids = [str(m.get("id")) for m in models]
        if name not in ids:
            raise EvalHarnessError(f"{url} serves {ids}, not {name!r}: pass --model openai:<one of those>")
        entry = models[ids.index(name)]
        length = entry.get("max_model_len")
        found = found or ServedModel(name, entry.get("root"), int(length) if length else None)
        reachable.append(url)
    if not reachable:
        raise Unreachable(f"no server answers /v1/models ({'; '.join(problems)})")
    for problem in problems:
        log.warning("replica left out: %s", problem)
    pool.urls = tuple(reachable)
    assert found is not None
    return found


def _tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode("utf-8")
    return {
        "class": type(tokenizer).__name__,
        "size": len(tokenizer),
        "vocab_sha256": hashlib.sha256(vocab).hexdigest()[:16],
    }


class OpenAIBackend:
    def __init__(
        self,
        model: str,
        base_urls: str | Sequence[str],
        tokenizer: str | None = None,
        concurrency: int = 8,
        batch_size: int = 8,
        max_length: int | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 6,
        trust_remote_code: bool = False,
        api_key: str | None = None,
    ) -> None:
        if concurrency < 1 or batch_size < 1:
            raise EvalHarnessError("--concurrency and --batch-size must be at least 1 for the openai backend")
        self.model = model
        self.pool = ServerPool(normalise_urls(base_urls), timeout_s, max_retries, api_key=api_key)
        self.served = find_model(self.pool, model)
        self.concurrency = concurrency
        self.encoder, self.tokenizer_source = self._load_encoder(tokenizer, trust_remote_code)
        self.tokenizer = self.encoder.tokenizer  # None with the server's /tokenize
        limit = getattr(self.tokenizer, "model_max_length", None)
        guess = self.served.max_model_len or (limit if limit and limit < 1_000_000 else 2048)
        self.max_length = int(max_length or guess)
        self.batch_size = batch_size
        self._tokenizer_lock = threading.Lock()
        log.info(
            "openai backend: %s on %s, tokenizer %s, context %d",
            model, ", ".join(self.pool.urls), self.tokenizer_source, self.max_length,
        )

    def _load_encoder(self, path: str | None, trust_remote_code: bool) -> tuple[Encoder, str]:
        """--tokenizer; else the server's /tokenize (its own tokenizer, whatever folders exist
        here); else a local folder named by the served model or its root."""
        if path:
            try:
                return Encoder(load_tokenizer(path, trust_remote_code=trust_remote_code)), path
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"cannot load the tokenizer {path!r}: {exc}") from None
        try:
            return ServerEncoder(self.pool, self.model, self.concurrency), "server /tokenize"
        except EvalHarnessError as exc:  # no /tokenize (404), or not vLLM's
            why = str(exc)
        for candidate in (c for c in (self.model, self.served.root) if c and Path(c).is_dir()):
            try:
                return Encoder(load_tokenizer(candidate, trust_remote_code=trust_remote_code)), candidate
            except (OSError, ValueError):
                continue
        raise ModelLoadError(
            f"no tokenizer for {self.model!r}: the server does not tokenize ({why}) and no --tokenizer "
            "was given: pass --tokenizer PATH (the model's folder or hub id)"
        )

    # -- log-likelihood -------------------------------------------------------------------------

    def _fit_scored(self, request: LoglikelihoodRequest) -> tuple[tuple[int, ...], int, bool, bool]:
        context, continuation = self.encoder.encode_pair(request.context, request.continuation, request.protected_chars)
        if len(continuation) > self.max_length - 1:
            raise EvalHarnessError(
                f"a continuation of {len(continuation)} tokens does not fit the model's {self.max_length}-token context"
            )
        # The server holds the whole prompt (context + continuation): one token less of context
        # than the local backend keeps when a prompt overflows.
        window = self.encoder.fit(context, self.max_length - len(continuation))
        return window.ids + continuation, len(continuation), window.truncated, window.truncated_document

    def _score(self, prompts: list[tuple[int, ...]], lengths: list[int]) -> list[tuple[float, bool]]:
        reply = self.pool.call(
            "/v1/completions",
            {"model": self.model, "prompt": [list(p) for p in prompts], "echo": True, "logprobs": 1,
             "max_tokens": 0, "temperature": 0.0},
        )  # fmt: skip
        choices = sorted(reply.get("choices") or [], key=lambda c: int(c.get("index", 0)))
        if len(choices) != len(prompts):
            raise EvalHarnessError(f"the server answered {len(choices)} choices for {len(prompts)} prompts")
        out = []
        for prompt, n, choice in zip(prompts, lengths, choices, strict=True):
            logprobs = choice.get("logprobs") or {}
            values = logprobs.get("token_logprobs")
            if not values or len(values) < len(prompt):
                raise EvalHarnessError(
                    f"the server returned no prompt log-probabilities for {self.model!r} "
                    "(it must support echo=true with logprobs and max_tokens=0, as vLLM does)"
                )
            extra = len(values) - len(prompt)  # a BOS the server put in front of our ids
            if extra > 1:
                raise EvalHarnessError(f"the server echoed {len(values)} tokens for a {len(prompt)}-token prompt")
            tail = values[len(values) - n :]
            tops = (logprobs.get("top_logprobs") or [None] * len(values))[len(values) - n :]
            if any(v is None for v in tail):
                raise EvalHarnessError("the server returned no log-probability for a continuation token")
            greedy = all(
                not top or float(v) >= max(float(x) for x in top.values()) for v, top in zip(tail, tops, strict=False)
            )
            out.append((sum(float(v) for v in tail), greedy))
        return out

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], resume: Resume[LoglikelihoodResponse] | None = None
    ) -> list[LoglikelihoodResponse]:
        if not requests:
            return []
        resume = resume or Resume()
        self.encoder.encode_many([s for r in requests for s in (r.context.rstrip(), r.context + r.continuation)])
        fitted = [self._fit_scored(r) for r in requests]
        self.encoder.forget()
        # Identical prompts (MMLU's answer letters after one question) share one scoring call.
        members: dict[tuple[tuple[int, ...], int], list[int]] = {}
        for i, (prompt, n, _, _) in enumerate(fitted):
            if i not in resume.done:
                members.setdefault((prompt, n), []).append(i)
        keys = list(members)

        def job(chunk: list[tuple[tuple[int, ...], int]]) -> Callable[[], list[LoglikelihoodResponse]]:
            def run() -> list[LoglikelihoodResponse]:
                scores = self._score([p for p, _ in chunk], [n for _, n in chunk])
                responses = []
                for key, (logprob, greedy) in zip(chunk, scores, strict=True):
                    for i in members[key]:
                        _, n, truncated, cut_document = fitted[i]
                        responses.append(LoglikelihoodResponse(logprob, greedy, n, truncated, cut_document))
                return responses

            return run

        jobs: list[Job[LoglikelihoodResponse]] = []
        for chunk in chunks(keys, self.batch_size):
            jobs.append(([i for key in chunk for i in members[key]], job(chunk)))
        results = dict(resume.done)
        results.update(run_jobs(jobs, resume, self.concurrency, "loglikelihood"))
        return [results[i] for i in range(len(requests))]

    # -- generation -----------------------------------------------------------------------------

    def _fit_prompt(self, request: GenerateRequest) -> Window:
        budget = self.max_length - request.sampling.max_new_tokens
        if budget <= 0:
            raise EvalHarnessError(
                f"max_new_tokens={request.sampling.max_new_tokens} leaves no room for a prompt "
                f"in the model's {self.max_length}-token context"
            )
        return self.encoder.fit(self.encoder.encode_context(request.context, request.protected_chars), budget)

    def _generate_one(self, request: GenerateRequest, window: Window) -> GenerateResponse:
        sampling = request.sampling
        payload: dict[str, Any] = {
            "model": self.model, "max_tokens": sampling.max_new_tokens,
            "temperature": 0.0 if sampling.greedy else sampling.temperature,
        }  # fmt: skip
        if not sampling.greedy:
            payload.update(top_p=sampling.top_p, seed=sampling.seed)
            if sampling.top_k:
                payload["top_k"] = sampling.top_k
        stops = [s for s in request.stop if s]
        if stops:
            payload["stop"] = stops
        if sampling.ignore_eos:
            payload["ignore_eos"] = True
        if request.messages and not window.truncated:
            payload["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            reply = self.pool.call("/v1/chat/completions", payload)
            choice = (reply.get("choices") or [{}])[0]
            text = str((choice.get("message") or {}).get("content") or "")
        else:
            payload["prompt"] = list(window.ids)
            reply = self.pool.call("/v1/completions", payload)
            choice = (reply.get("choices") or [{}])[0]
            text = str(choice.get("text") or "")
        reason = choice.get("finish_reason")
        if reason == "length":
            finish = "length"
        elif reason == "stop":
            # vLLM names the stop string in stop_reason and leaves it None at EOS.
            finish = "stop" if choice.get("stop_reason") is not None else "eos"
        else:
            finish = str(reason or "eos")
        tokens = (reply.get("usage") or {}).get("completion_tokens")
        if tokens is not None and finish == "eos":
            tokens = max(int(tokens) - 1, 0)  # vLLM counts the EOS token; the local backend does not
        if tokens is None:
            with self._tokenizer_lock:  # the encoder's memo is not thread-safe
                tokens = len(self.encoder.encode_many([text])[0])
        return GenerateResponse(text, int(tokens), finish, window.truncated, window.truncated_document)

    def generate(
        self, requests: Sequence[GenerateRequest], resume: Resume[GenerateResponse] | None = None
    ) -> list[GenerateResponse]:
        if not requests:
            return []
        resume = resume or Resume()
        todo = [i for i in range(len(requests)) if i not in resume.done]
        windows = {i: self._fit_prompt(requests[i]) for i in todo}  # tokenised here, not in the threads
        self.encoder.forget()

        def job(i: int) -> Callable[[], list[GenerateResponse]]:
            return lambda: [self._generate_one(requests[i], windows[i])]

        results = dict(resume.done)
        results.update(run_jobs([([i], job(i)) for i in todo], resume, self.concurrency, "generate"))
        return [results[i] for i in range(len(requests))]

    # -- identity -------------------------------------------------------------------------------

    def chat_tokenizer(self) -> Any:
        """--apply-chat-template renders the template here too: log-likelihood prompts and prompt
        fitting use the local rendering, generation sends the messages to the chat API."""
        if self.tokenizer is None:
            raise EvalHarnessError(
                "--apply-chat-template with the openai backend needs the model's tokenizer (its chat "
                "template renders the log-likelihood prompts): pass --tokenizer PATH"
            )
        return self.tokenizer

    def fingerprint(self) -> dict[str, Any]:
        encoder = self.encoder
        tokenizer = encoder.identity if isinstance(encoder, ServerEncoder) else _tokenizer_identity(self.tokenizer)
        return {
            "backend": "openai",
            "model": self.model,
            # "model" is left out of the cache key; two models may share a tokenizer (7B and 13B).
            "served": {"id": self.served.id, "root": self.served.root},
            "tokenizer": tokenizer,
            "max_length": self.max_length,
        }


OPENAI_OPTIONS = frozenset(
    {"base_url", "tokenizer", "concurrency", "batch_size", "max_length", "timeout", "max_retries", "api_key",
     "trust_remote_code", "device", "dtype", "model_args"}
)  # fmt: skip


@register_backend("openai", OPENAI_OPTIONS, "an OpenAI-compatible server (vLLM): --base-url URL[,URL...]")
def build_openai(model: str, options: Mapping[str, Any]) -> OpenAIBackend:
    # The server owns device, dtype and loader settings; the CLI passes its defaults for them.
    refuse_local_settings(options, "server", "openai")
    if options.get("model_args"):
        raise EvalHarnessError("--model-args is the server's choice, not the openai backend's: leave it out")
    batch = options.get("batch_size") or 8
    if batch == "auto":
        batch = 8
    return OpenAIBackend(
        model,
        options.get("base_url") or "",
        tokenizer=options.get("tokenizer"),
        concurrency=int(options.get("concurrency") or 8),
        batch_size=int(batch),
        max_length=options.get("max_length"),
        timeout_s=float(options.get("timeout") or 600.0),
        max_retries=int(options.get("max_retries", 6)),
        trust_remote_code=bool(options.get("trust_remote_code", False)),
        api_key=options.get("api_key"),
    )
