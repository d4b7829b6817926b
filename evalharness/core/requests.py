"""Typed, immutable requests to a backend and its responses.

Every task speaks to the backend only through these objects, so a backend can batch, cache
and reorder them freely and return responses in the original order.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """log P(continuation | context).

    ``protected_chars`` is the length of the context's tail that belongs to the test document
    itself: when the prompt overflows the model's context the backend drops few-shot text from
    the left first and only cuts into this tail when nothing else is left.
    """

    context: str
    continuation: str
    protected_chars: int = 0

    def __post_init__(self) -> None:
        if not self.continuation:
            raise ValueError("a log-likelihood request needs a non-empty continuation")
        if not 0 <= self.protected_chars <= len(self.context):
            raise ValueError("protected_chars must lie within the context")


@dataclass(frozen=True)
class LoglikelihoodResponse:
    logprob: float
    is_greedy: bool
    num_tokens: int
    truncated: bool = False
    truncated_document: bool = False


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings; the defaults are greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    do_sample: bool = False
    ignore_eos: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0.0


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class GenerateRequest:
    """Generate after ``context`` until EOS, a stop string or ``sampling.max_new_tokens``.

    ``messages``, when given, are the chat turns ``context`` renders with the model's chat
    template (--apply-chat-template): a backend whose server applies the template itself may
    send them instead of the rendered text.
    """

    context: str
    stop: tuple[str, ...] = ()
    sampling: SamplingParams = field(default_factory=SamplingParams)
    protected_chars: int = 0
    messages: tuple[ChatMessage, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.protected_chars <= len(self.context):
            raise ValueError("protected_chars must lie within the context")


@dataclass(frozen=True)
class GenerateResponse:
    text: str
    num_tokens: int
    finish_reason: str  # "stop", "eos" or "length"
    truncated: bool = False
    truncated_document: bool = False


Request = LoglikelihoodRequest | GenerateRequest
Response = LoglikelihoodResponse | GenerateResponse
