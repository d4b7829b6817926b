"""Multiple choice by log-likelihood, written once for every benchmark that needs it.

A task gives its prompt (the context), the choices and the gold index; this shape makes one
``LoglikelihoodRequest(context, " " + choice)`` per choice and scores any of:

- ``acc``: the most likely choice is the gold one (MMLU, and ``mc1`` for TruthfulQA's name);
- ``acc_norm``: log-likelihood divided by the choice's length in characters (the Llama papers'
  convention, lm-eval's ``acc_norm``);
- ``acc_calibrated``: log P(choice | context) − log P(choice | "Answer:"), the Llama 1 paper's
  rule for OpenBookQA and BoolQ (lm-eval's ``acc_mutual_info`` uses an empty context instead);
- ``mc2``: the normalised probability mass on the true answers (``doc.fields["labels"]``).

``PartialScoring`` is WinoGrande's variant: each option is substituted into the context and only
the shared continuation after it is scored.

``answer_index`` maps a dataset's answer key to a choice index, whichever label style a row uses;
``labelled_choices`` checks answers labelled true/false (TruthfulQA's mc1/mc2 targets).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from evalharness.core.errors import EvalHarnessError
from evalharness.core.requests import LoglikelihoodRequest, LoglikelihoodResponse, Request, Response
from evalharness.core.task import Doc, Outcome, Prompt, Task

METRICS = ("acc", "acc_norm", "acc_calibrated", "mc1", "mc2")


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; ties go to the first, as lm-eval's np.argmax."""
    return max(range(len(values)), key=values.__getitem__)


def answer_index(labels: Sequence[str], key: str) -> int:
    """The index of answer ``key`` among a row's choice ``labels``.

    Labels are matched as given (after trimming spaces); a row whose labels are letters but whose
    key is a digit, or the other way round (ARC's New York Regents items use "1".."4"), is mapped
    by position: "1" ↔ "A". Anything else is a ValueError naming the key and the labels.
    """
    labels = [str(label).strip() for label in labels]
    key = str(key).strip()
    if key in labels:
        return labels.index(key)
    if key.isdigit() and all(label.isalpha() for label in labels) and 1 <= int(key) <= len(labels):
        return int(key) - 1
    if len(key) == 1 and key.isalpha() and all(label.isdigit() for label in labels):
        position = ord(key.upper()) - ord("A")
        if 0 <= position < len(labels):
            return position
    raise ValueError(f"answer key {key!r} is not one of the labels {labels}")


def labelled_choices(targets: Mapping[str, Any], name: str, single_true: bool) -> dict[str, Any]:
    """Doc fields for answers labelled true (1) or false (0), from the hub's {"choices", "labels"}
    (``name`` for errors): the choices, labels and the index of the first true answer. Every label
    must be 0/1 and at least one, or with ``single_true`` exactly one (mc1), answer true."""
    choices, labels = list(targets["choices"]), [int(x) for x in targets["labels"]]
    if not choices or any(label not in (0, 1) for label in labels) or 1 not in labels:
        raise ValueError(f"{name} needs answers labelled 0/1, one or more 1")
    if single_true and labels.count(1) != 1:
        raise ValueError(f"{name} must have exactly one true answer")
    return {"choices": choices, "labels": labels, "answer": labels.index(1)}


def mc2_score(logprobs: Sequence[float], labels: Sequence[int]) -> float:
    """Normalised probability mass on the true answers: sum(exp(ll) of true) / sum(exp(ll)).

    Computed in log space (softmax), so very unlikely answers do not underflow to 0/0.
    """
    if len(logprobs) != len(labels) or not logprobs:
        raise ValueError("mc2 needs one log-likelihood per labelled answer")
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    return math.fsum(w for w, label in zip(weights, labels, strict=False) if label == 1) / math.fsum(weights)


class MultipleChoice(Task):
    """Declare ``metrics``; override ``choices``/``gold`` when the fields are named otherwise."""

    metrics: ClassVar[tuple[str, ...]] = ("acc", "acc_norm")
    calibration_context: ClassVar[str] = "Answer:"
    # True: samples log {choice: log-likelihood} and the predicted/gold choice text (MMLU's
    # letters); False: a list of log-likelihoods and indices.
    labelled_output: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = sorted(set(cls.metrics) - set(METRICS))
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown multiple-choice metric(s) {unknown}; known: {METRICS}")

    def choices(self, doc: Doc) -> Sequence[str]:
        return list(doc.fields["choices"])

    def gold(self, doc: Doc) -> int:
        return int(doc.fields["answer"])

    def target(self, doc: Doc) -> str:
        return self.choices(doc)[self.gold(doc)]

    def protected_chars(self, doc: Doc, prompt: Prompt) -> int:
        """How much of the prompt's tail must survive truncation (default: the document)."""
        return prompt.document_chars

    def continuations(self, doc: Doc) -> list[str]:
        return [self.target_delimiter + choice for choice in self.choices(doc)]

    def requests(self, doc: Doc, prompt: Prompt) -> list[Request]:
        protected = self.protected_chars(doc, prompt)
        continuations = self.continuations(doc)
        requests: list[Request] = [LoglikelihoodRequest(prompt.text, c, protected) for c in continuations]
        if "acc_calibrated" in self.metrics:
            requests += [LoglikelihoodRequest(self.calibration_context, c) for c in continuations]
        return requests

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        logprobs = [r.logprob for r in responses if isinstance(r, LoglikelihoodResponse)]
        choices = self.choices(doc)
        n = len(choices)
        if len(logprobs) != n * (2 if "acc_calibrated" in self.metrics else 1):
            raise EvalHarnessError(f"{self.name}: {len(logprobs)} log-likelihoods for {n} choices")
        conditional = logprobs[:n]
        predicted = argmax(conditional)
        gold = self.gold(doc)
        metrics: dict[str, float] = {}
        extra: dict[str, Any] = {}
        for metric in self.metrics:
            if metric in ("acc", "mc1"):
                metrics[metric] = float(predicted == gold)
            elif metric == "acc_norm":
                normalized = argmax([lp / max(len(c), 1) for lp, c in zip(conditional, choices, strict=False)])
                metrics[metric] = float(normalized == gold)
                extra["prediction_norm"] = normalized
            elif metric == "acc_calibrated":
                calibrated = argmax([c - u for c, u in zip(conditional, logprobs[n:], strict=False)])
                metrics[metric] = float(calibrated == gold)
                extra["prediction_calibrated"] = calibrated
                extra["unconditional"] = logprobs[n:]
            elif metric == "mc2":
                labels = list(doc.fields["labels"])
                mass = mc2_score(conditional, labels)
                metrics[metric] = mass
                return Outcome(conditional, mass, labels, metrics, extra)
        if self.labelled_output:
            return Outcome(dict(zip(choices, conditional, strict=False)), choices[predicted], choices[gold], metrics, extra)
        return Outcome(conditional, predicted, gold, metrics, extra)


class PartialScoring(MultipleChoice):
    """Each option completes the context; only the continuation they share is scored.

    WinoGrande: "… because _ was …" → the sentence up to the blank with each option filled in,
    then the same continuation after the blank; the option under which that continuation is
    most likely wins. The template renders the gold option's context (for the prompt's hash and
    the few-shot examples), whose answer text is the shared continuation.

    ``acc_norm`` may be declared for tables that expect it: every option is scored on the same
    continuation, so dividing by its length in characters leaves the ranking, and ``acc``, unchanged.
    """

    metrics: ClassVar[tuple[str, ...]] = ("acc",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unsupported = sorted(set(cls.metrics) - {"acc", "acc_norm"})
        if unsupported:
            raise TypeError(f"{cls.__name__}: partial scoring reports acc and acc_norm, not {unsupported}")

    @abstractmethod
    def option_contexts(self, doc: Doc) -> list[str]: ...

    @abstractmethod
    def shared_continuation(self, doc: Doc) -> str: ...

    def choices(self, doc: Doc) -> Sequence[str]:
        return self.option_contexts(doc)

    def target(self, doc: Doc) -> str:
        return self.shared_continuation(doc)

    def requests(self, doc: Doc, prompt: Prompt) -> list[Request]:
        head = prompt.fewshot_text
        continuation = self.target_delimiter + self.shared_continuation(doc)
        return [
            LoglikelihoodRequest(head + context, continuation, len(context))
            for context in self.option_contexts(doc)
        ]

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        logprobs = [r.logprob for r in responses if isinstance(r, LoglikelihoodResponse)]
        predicted, gold = argmax(logprobs), self.gold(doc)
        # acc_norm: the same continuation under every option, so the same argmax as acc.
        return Outcome(logprobs, predicted, gold, {metric: float(predicted == gold) for metric in self.metrics})
