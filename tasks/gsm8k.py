"""GSM8K (Cobbe et al., 2021), 8-shot chain of thought, as in the Llama 2 card's Math group.

Each of the 1,319 test questions follows the 8 fixed exemplars of Wei et al. (2022), rendered
"Q: …\nA: <reasoning> The answer is N.". The model answers greedily (maj1@1: one sample, no
vote) until "Q:", "</s>" or a blank line. Two extractions are scored: strict ("The answer is N.")
and flexible (the last number in the output), each by exact match against the number after
"####" in the reference solution. With ``samples=k`` (and a temperature via --gen-kwargs) the
majority answer over k samples is scored as maj@k.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalharness.core.task import Doc, register_task
from evalharness.data.datasets import Dataset, Fewshot, JsonLines
from evalharness.shapes.answer_extraction import gsm8k_gold, last_number, numeric_match, strict_answer
from evalharness.shapes.short_answer import ShortAnswer

TEST = Dataset("openai/gsm8k", "main", "test", JsonLines("gsm8k/{split}.jsonl", ("question", "answer")))
# Wei et al.'s 8 exemplars exist only as a local file (no hub dataset carries them).
EXEMPLARS = Dataset(
    "gsm8k-cot-exemplars", None, "exemplars",
    JsonLines("gsm8k/cot_8shot_exemplars.jsonl", ("question", "cot_answer")),
    offline_hint="the 8 chain-of-thought exemplars are read from gsm8k/cot_8shot_exemplars.jsonl; pass --data-dir",
)


@register_task
class GSM8K(ShortAnswer):
    name = "gsm8k"
    version = "1.0"
    template = "gsm8k/cot.jinja"
    dataset = TEST
    fewshot = Fewshot("exemplars", "first_n", EXEMPLARS)
    default_fewshot = 8
    stop = ("Q:", "</s>", "\n\n")
    extractors = {"strict": strict_answer, "flexible": last_number}
    comparisons = {"exact_match": numeric_match}
    defaults = {"samples": 1, "max_new_tokens": 256, "pass_at": 0}

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        if "cot_answer" in record:  # an exemplar
            return {"question": record["question"], "cot_answer": record["cot_answer"]}
        if not isinstance(record["answer"], str) or not isinstance(record["question"], str):
            raise ValueError("question and answer must be strings")
        try:
            gold = gsm8k_gold(record["answer"])
        except ValueError:
            raise ValueError("the answer has no '#### N' line") from None
        return {"question": record["question"], "gold": gold}

    def target(self, doc: Doc) -> str:
        return str(doc.fields["cot_answer"])

    def references(self, doc: Doc) -> list[str]:
        return [str(doc.fields["gold"])]
