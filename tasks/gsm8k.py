"""GSM8K (Cobbe et al., 2021), 8-shot chain of thought, as in the Llama 2 card's Math group.

Each of the 1,319 test questions follows the 8 fixed exemplars of Wei et al. (2022), rendered
"Q: …\nA: <reasoning> The answer is N.". The model answers greedily (maj1@1: one sample, no
vote) until "Q:", "</s>" or a blank line. Two extractions are scored: strict ("The answer is N.")
and flexible (the last number in the output), each by exact match against the number after
"####" in the reference solution. With ``samples=k`` (and a temperature via --gen-kwargs) the
majority answer over k samples is scored as maj@k.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from evalharness.data.source import DataSource
from evalharness.core.errors import DataError, EvalHarnessError
from evalharness.shapes.answer_extraction import gsm8k_gold, last_number, strict_answer
from evalharness.core.requests import GenerateRequest, GenerateResponse, Response, SamplingParams
from evalharness.core.task import Doc, Outcome, Prompt, Task, register_task

STOP = ("Q:", "</s>", "\n\n")


@register_task
class GSM8K(Task):
    name = "gsm8k"
    version = "1.0"
    template = "gsm8k/cot.jinja"
    default_fewshot = 8
    fewshot_sampling = "first_n"
    defaults = {"samples": 1, "max_new_tokens": 256}

    def documents(self, data: DataSource, subtask: str) -> list[Doc]:
        if data.is_local:
            rows = data.read_jsonl("gsm8k", "test.jsonl", required=("question", "answer"))
        else:
            rows = list(data.hub("openai/gsm8k", "main", "test"))
        docs = []
        for i, row in enumerate(rows):
            try:
                gold = gsm8k_gold(row["answer"])
            except ValueError:
                raise DataError(f"gsm8k test row {i + 1}: the answer has no '#### N' line") from None
            docs.append(Doc(subtask, i, {"question": row["question"], "gold": gold}))
        return docs

    def fewshot_pool(self, data: DataSource, subtask: str) -> list[Doc]:
        if not data.is_local:
            raise EvalHarnessError(
                "gsm8k: the 8 chain-of-thought exemplars are read from a local data root"
                " (gsm8k/cot_8shot_exemplars.jsonl); pass --data-dir"
            )
        rows = data.read_jsonl("gsm8k", "cot_8shot_exemplars.jsonl", required=("question", "cot_answer"))
        return [Doc(subtask, i, {"question": r["question"], "cot_answer": r["cot_answer"]}) for i, r in enumerate(rows)]

    def target(self, doc: Doc) -> str:
        return doc.fields["cot_answer"]

    def requests(self, doc: Doc, prompt: Prompt) -> list[GenerateRequest]:
        sampling = SamplingParams(max_new_tokens=int(self.options["max_new_tokens"]))
        return [
            GenerateRequest(prompt.text, STOP, sampling, prompt.document_chars)
            for _ in range(int(self.options["samples"]))
        ]

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        texts = [r.text for r in responses if isinstance(r, GenerateResponse)]
        strict = [strict_answer(t) for t in texts]
        flexible = [last_number(t) for t in texts]
        strict_vote, flexible_vote = _majority(strict), _majority(flexible)
        gold = doc.fields["gold"]
        return Outcome(
            output=texts[0] if len(texts) == 1 else texts,
            prediction={"strict": strict_vote, "flexible": flexible_vote},
            gold=gold,
            metrics={
                "exact_match_strict": float(strict_vote == gold),
                "exact_match_flexible": float(flexible_vote == gold),
            },
            extra={"extracted": {"strict": strict, "flexible": flexible}},
        )


def _majority(answers: Sequence[str | None]) -> str | None:
    """Most common extracted answer; ties go to the earliest sample (so k=1 is the sample)."""
    counted = Counter(a for a in answers if a is not None)
    if not counted:
        return None
    best = max(counted.values())
    return next(a for a in answers if a is not None and counted[a] == best)
