"""The served model's own tokenizer through vLLM's ``POST /tokenize``, when no local one is given.

vLLM answers ``{"model", "prompt", "add_special_tokens"}`` with ``{"tokens": [...]}``, one string
per call: the strings of a request list not seen yet go ``concurrency`` calls at a time, each
string once (the encoder's memo), and the shared prompt fitting runs on the ids as it does with a
local tokenizer. The server does not say its EOS id, which only an empty context needs (then
``--tokenizer`` is required); the fingerprint names the tokenizer by the ids of a fixed probe text.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from evalharness.backends.openai_http import ServerPool
from evalharness.backends.prompt_fitting import Encoder, prefix_ids_of
from evalharness.core.errors import EvalHarnessError

# Words, digits, whitespace runs, punctuation and non-Latin scripts: where vocabularies differ.
PROBE = "The quick brown fox, 1234567 + 89 = ?\n\n  Über naïve café — 東京 ١٢٣ \t<tag> {x: [1, 2]}"


class ServerEncoder(Encoder):
    """An ``Encoder`` whose token ids come from the server that serves ``model``."""

    def __init__(self, pool: ServerPool, model: str, concurrency: int = 8) -> None:
        self.tokenizer = None
        self.pool = pool
        self.model = model
        self.concurrency = concurrency
        prefix = prefix_ids_of(self.tokenize("a", special=True), self.tokenize("a", special=False))
        self._setup(prefix, None, 0)
        probe = json.dumps(self.tokenize(PROBE, special=False)).encode()
        self.identity = {
            "class": "server /tokenize",
            "prefix_ids": list(prefix),
            "probe_sha256": hashlib.sha256(probe).hexdigest()[:16],
        }

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        reply: Any = self.pool.call("/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": special})
        tokens = reply.get("tokens") if isinstance(reply, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) and t >= 0 for t in tokens):
            raise EvalHarnessError(f"the server's /tokenize answered without a list of token ids: {str(reply)[:200]}")
        return tokens

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="tokenize") as executor:
            encoded = list(executor.map(self.tokenize, texts))
        largest = max((max(ids) for ids in encoded if ids), default=-1)
        if largest >= len(self._ints):  # the vocabulary size is learnt as ids arrive
            self._ints.extend(range(len(self._ints), largest + 1024))
        return encoded
