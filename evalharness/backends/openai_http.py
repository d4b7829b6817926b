"""JSON over HTTP to one or more OpenAI-compatible servers serving the same model (replicas).

Standard library only (``urllib``): the harness needs nothing more for a handful of JSON calls.
Every call picks the next live replica (round robin); a connection error, a timeout, 429 or a
5xx retries with exponential backoff, on another replica when there is one. A replica that
failed is skipped for a while (``cooldown_s``) so the others take its share. Any other 4xx is
the caller's fault and an immediate one-line error.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.core.errors import EvalHarnessError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class ServerError(EvalHarnessError):
    """A server answered with an error the harness cannot fix by retrying."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status (401: a refused key)


class Unreachable(EvalHarnessError):
    """No replica answered within the retries."""


def normalise_urls(
    urls: str | Sequence[str],
    missing: str = "the openai backend needs --base-url URL[,URL...] (e.g. http://127.0.0.1:8000)",
) -> tuple[str, ...]:
    """``http://h:p``, ``http://h:p/v1`` or a comma-separated list → base URLs without ``/v1``."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out = []
    for raw in items:
        url = raw.strip().rstrip("/")
        if not url:
            continue
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        out.append(url.removesuffix("/v1"))
    if not out:
        raise EvalHarnessError(missing)
    return tuple(dict.fromkeys(out))


def _message(body: bytes) -> str:
    """The server's error message on one line (OpenAI: {"error": {"message": ...}})."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
        err = data.get("error", data) if isinstance(data, dict) else data
        text = str(err.get("message", err)) if isinstance(err, dict) else str(err)
    except ValueError:
        pass
    return " ".join(text.split())[:300]


class ServerPool:
    def __init__(
        self,
        urls: Sequence[str],
        timeout_s: float = 600.0,
        max_retries: int = 6,
        backoff_s: float = 0.5,
        cooldown_s: float = 5.0,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.urls = tuple(urls)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.cooldown_s = cooldown_s
        self.api_key = api_key  # sent as a bearer token, never logged
        self.headers = dict(headers or {})
        self._lock = threading.Lock()
        self._next = 0
        self._down_until: dict[str, float] = {}
        self.calls: Counter[str] = Counter()  # successful calls per replica
        self.paths: Counter[str] = Counter()  # and per path
        self.failures: Counter[str] = Counter()

    def _pick(self, avoid: str | None) -> str:
        """The next replica in turn that is not cooling down (any if all are)."""
        with self._lock:
            now = time.monotonic()
            order = [self.urls[(self._next + i) % len(self.urls)] for i in range(len(self.urls))]
            self._next = (self._next + 1) % len(self.urls)
            live = [u for u in order if self._down_until.get(u, 0.0) <= now and u != avoid]
            if live:
                return live[0]
            others = [u for u in order if u != avoid] or order
            return min(others, key=lambda u: self._down_until.get(u, 0.0))

    def _mark_down(self, url: str) -> None:
        with self._lock:
            self._down_until[url] = time.monotonic() + self.cooldown_s
            self.failures[url] += 1

    def _live_other(self, url: str) -> bool:
        with self._lock:
            now = time.monotonic()
            return any(u != url and self._down_until.get(u, 0.0) <= now for u in self.urls)

    def request(
        self, url: str, path: str, payload: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> Any:
        """One HTTP call to one replica, no retries: the decoded JSON, or an exception."""
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self.headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(url + path, data=data, headers=headers, method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as response:
            return json.loads(response.read())

    def call(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        """POST (or GET without payload) on some replica, with retries and failover."""
        last = ""
        avoid: str | None = None
        for attempt in range(self.max_retries + 1):
            url = self._pick(avoid)
            try:
                result = self.request(url, path, payload)
            except urllib.error.HTTPError as exc:
                message = _message(exc.read())
                if exc.code not in RETRY_STATUS:
                    raise ServerError(f"{url}{path} answered {exc.code}: {message}", exc.code) from None
                last = f"{url}{path} answered {exc.code}: {message}"
            except OSError as exc:  # URLError, connection refused or reset, timeouts
                reason = getattr(exc, "reason", exc)
                last = f"cannot reach {url} ({reason})"
            except ValueError as exc:  # not JSON: a proxy's error page, a truncated body
                last = f"{url}{path} answered something that is not JSON ({exc})"
            else:
                with self._lock:
                    self.calls[url] += 1
                    self.paths[path] += 1
                return result
            self._mark_down(url)
            avoid = url if len(self.urls) > 1 else None
            if attempt < self.max_retries:
                # Fail over at once while another replica is live; back off when none is.
                delay = 0.0 if self._live_other(url) else self.backoff_s * 2 ** min(attempt, 6)
                log.warning("%s; retry %d/%d in %.1f s", last, attempt + 1, self.max_retries, delay)
                time.sleep(delay)
        raise Unreachable(f"{last} (gave up after {self.max_retries + 1} attempts)")
