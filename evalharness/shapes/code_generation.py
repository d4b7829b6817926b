"""Code generation scored by running it: n completions per problem, each executed in the
sandbox with the problem's tests, and the unbiased pass@k (Chen et al., 2021) per problem.

Decoding follows the card (Table 21's caption) and is chosen by the options, never guessed:

- ``samples=1`` (the default): one greedy completion per problem. Cheap, for CI; ``pass@1`` is
  then simply the fraction solved, and results.json labels it ``greedy`` and approximate.
- ``samples=N`` (N > 1): N completions at temperature 0.1, top-p 0.95; ``pass@1`` is the
  unbiased estimate from the N — the card's protocol.
- ``samples=N,pass_at=K`` (K > 1): N completions at temperature 0.8, top-p 0.95 and ``pass@K``
  (the card's pass@100 for HumanEval, pass@80 for MBPP).

``--gen-kwargs task:temperature=…`` still overrides the decoding (results.json records it in
``config``). Every completion is cut at the first stop string and run as a whole program (the
task's ``program``); a program passes when it exits 0 (``evalharness.scoring.code_sandbox``).
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from evalharness.core.errors import EvalHarnessError
from evalharness.core.requests import Response, SamplingParams
from evalharness.core.task import Doc, Finalized, Outcome, TaskContext
from evalharness.scoring.code_sandbox import MODES, Limits, SandboxScorer
from evalharness.scoring.scorer import Scorer
from evalharness.shapes.generating import generations, option_choice, option_int
from evalharness.shapes.scored_generation import ScoredGeneration
from evalharness.shapes.short_answer import pass_at_k

PASS_AT_1 = (0.1, 0.95)  # temperature, top-p: Table 21's pass@1
PASS_AT_K = (0.8, 0.95)  # pass@100 / pass@80


class CodeGeneration(ScoredGeneration):
    card_k: ClassVar[int] = 100  # the card's large k for this benchmark (pass@100, pass@80)
    defaults: ClassVar[Mapping[str, Any]] = {
        "samples": 1,
        "pass_at": 1,
        "max_new_tokens": 512,
        "sandbox": "bwrap",
        "timeout": 10,  # wall-clock seconds per program (CPU seconds likewise)
        "sandbox_workers": 0,  # programs run at once; 0 = one per core, at most 8
    }

    def check_options(self) -> None:
        super().check_options()
        samples = option_int(self, "samples")
        k = option_int(self, "pass_at")
        if k > samples:
            raise EvalHarnessError(f"{self.name}: --task-args pass_at={k} needs samples >= {k}")
        option_choice(self, "sandbox", MODES)
        option_int(self, "timeout")
        option_int(self, "sandbox_workers", minimum=0)

    # -- decoding --------------------------------------------------------------------------

    def protocol(self) -> str:
        samples, k = option_int(self, "samples"), option_int(self, "pass_at")
        if samples == 1:
            return "greedy"
        return "pass@1" if k == 1 else f"pass@{k}"

    def sampling(self) -> SamplingParams:
        max_new_tokens = option_int(self, "max_new_tokens")
        if self.protocol() == "greedy":
            return SamplingParams(max_new_tokens=max_new_tokens)
        temperature, top_p = PASS_AT_1 if self.protocol() == "pass@1" else PASS_AT_K
        return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, do_sample=True)

    def protocol_note(self) -> str:
        samples, k = option_int(self, "samples"), option_int(self, "pass_at")
        if samples == 1:
            return (
                "greedy pass@1: one greedy completion per problem (CI default; the card samples at T=0.1, top-p 0.95)"
            )
        t, p = PASS_AT_1 if k == 1 else PASS_AT_K
        return f"unbiased pass@{k} (Chen et al.) from {samples} samples per problem at T={t:g}, top-p {p:g}"

    # -- programs --------------------------------------------------------------------------

    def completion(self, text: str) -> str:
        """The generation up to the first stop string (the backend stops there too)."""
        cut = min((i for i in (text.find(s) for s in self.stop if s) if i >= 0), default=len(text))
        return text[:cut]

    @abstractmethod
    def program(self, doc: Doc, completion: str) -> str:
        """The whole program run for one completion: solution and tests."""

    def scorer(self, data_dir: str | None) -> Scorer:
        seconds = option_int(self, "timeout")
        limits = Limits(timeout_s=float(seconds), cpu_s=seconds)
        return SandboxScorer(str(self.options["sandbox"]), limits, option_int(self, "sandbox_workers", minimum=0))

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        texts = [r.text for r in generations(responses)]
        completions = [self.completion(t) for t in texts]
        reasons = [r.finish_reason for r in generations(responses)]
        return Outcome(
            output=texts[0] if len(texts) == 1 else texts,
            prediction=completions[0] if len(completions) == 1 else completions,
            gold=None,
            metrics={},
            extra={**self.details(doc), "finish_reason": reasons[0] if len(reasons) == 1 else reasons},
        )

    def finalize(self, scored: Sequence[tuple[Doc, Outcome]], context: TaskContext) -> Finalized:
        """Every completion of every problem through the sandbox in one batch, then pass@k."""
        if not scored:
            return Finalized([])
        flat: list[tuple[Doc, str]] = []
        for doc, outcome in scored:
            texts = outcome.prediction if isinstance(outcome.prediction, list) else [outcome.prediction]
            flat += [(doc, self.program(doc, str(t))) for t in texts]
        scorer = self.scorer(context.data_dir)
        judged = scorer.judge([d for d, _ in flat], [p for _, p in flat], context)
        if len(judged.items) != len(flat):
            raise EvalHarnessError(f"{self.name}: the sandbox returned {len(judged.items)} results for {len(flat)}")
        k = option_int(self, "pass_at")
        outcomes, at = [], 0
        for _, outcome in scored:
            n = len(outcome.prediction) if isinstance(outcome.prediction, list) else 1
            items = judged.items[at : at + n]
            at += n
            correct = sum(int(j.metrics["passed"]) for j in items)
            results = [str(j.details.get("result")) for j in items]
            errors = [str(j.details.get("error", "")) for j in items]
            outcomes.append(dataclasses.replace(
                outcome,
                metrics={f"pass@{k}": pass_at_k(n, correct, k)},
                extra={**outcome.extra, "passed": correct, "samples": n,
                       "result": results[0] if n == 1 else results,
                       **({"error": errors[0] if n == 1 else errors} if any(errors) else {})},
            ))  # fmt: skip
        return Finalized(outcomes, self._provenance(dict(judged.provenance)))

    def _provenance(self, sandbox: dict[str, Any]) -> dict[str, Any]:
        """The sandbox's provenance and the pass@k protocol; approximate when either is."""
        reasons = [sandbox["approximation"]] if sandbox.get("approximation") else []
        if self.protocol() == "greedy":
            reasons.append("greedy pass@1 (not the card's sampled estimate)")
        return {
            **sandbox,
            "pass_at_protocol": self.protocol(),
            "pass_at_note": self.protocol_note(),
            "approximate": bool(reasons),
            **({"approximation": "; ".join(reasons)} if reasons else {}),
        }

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            **self._provenance(self.scorer(None).describe()),
            "default_decoding": self.decoding(),
            "card_protocol": f"pass@1: n samples, T=0.1, top-p 0.95; pass@{self.card_k}: T=0.8, top-p 0.95 (Table 21)",
        }
