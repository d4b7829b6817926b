"""What every generation shape shares: decoding settings, stop strings, checked options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from evalharness.core.errors import EvalHarnessError
from evalharness.core.requests import GenerateRequest, GenerateResponse, Response, SamplingParams
from evalharness.core.task import Doc, Prompt, Task


def option_int(task: Task, key: str, minimum: int = 1) -> int:
    """A --task-args integer, checked: one line naming the option when it is not one."""
    value = task.options[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EvalHarnessError(f"{task.name}: --task-args {key}={value!r}: expected an integer >= {minimum}")
    return value


def option_flag(task: Task, key: str) -> bool:
    value = task.options[key]
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise EvalHarnessError(f"{task.name}: --task-args {key}={value!r}: expected true or false")


def option_choice(task: Task, key: str, allowed: Sequence[str]) -> str:
    value = task.options[key]
    if value not in allowed:
        raise EvalHarnessError(f"{task.name}: --task-args {key}={value!r}: choose one of {', '.join(allowed)}")
    return str(value)


def generations(responses: Sequence[Response]) -> list[GenerateResponse]:
    return [r for r in responses if isinstance(r, GenerateResponse)]


class GeneratingTask(Task):
    """A task whose requests generate text. Greedy unless ``temperature`` is set."""

    stop: ClassVar[tuple[str, ...]] = ()
    temperature: ClassVar[float] = 0.0
    top_p: ClassVar[float] = 1.0
    defaults: ClassVar[Mapping[str, Any]] = {"max_new_tokens": 256}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.check_options()

    def check_options(self) -> None:
        """Every option is checked when the task is built, before any data or model loads."""
        option_int(self, "max_new_tokens")
        if "samples" in self.options:
            option_int(self, "samples")

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=option_int(self, "max_new_tokens"),
            temperature=self.temperature,
            top_p=self.top_p,
            do_sample=self.temperature > 0,
        )

    def protected_chars(self, doc: Doc, prompt: Prompt) -> int:
        return prompt.document_chars

    def requests(self, doc: Doc, prompt: Prompt) -> list[GenerateRequest]:  # type: ignore[override]
        samples = option_int(self, "samples") if "samples" in self.options else 1
        request = GenerateRequest(prompt.text, self.stop, self.sampling(), self.protected_chars(doc, prompt))
        return [request] * samples

    def decoding(self) -> dict[str, Any]:
        """The task's own decoding settings, before any --gen-kwargs, for results.json."""
        sampling = self.sampling()
        if sampling.greedy:
            return {"greedy": True, "max_new_tokens": sampling.max_new_tokens, "stop": list(self.stop)}
        return {
            "temperature": sampling.temperature, "top_p": sampling.top_p, "do_sample": True,
            "max_new_tokens": sampling.max_new_tokens, "stop": list(self.stop),
        }  # fmt: skip

