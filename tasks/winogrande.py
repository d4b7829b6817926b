"""WinoGrande (Sakaguchi et al., 2019), 0-shot, as in the Llama 2 card's Commonsense Reasoning group.

1,267 ``winogrande_xl`` validation sentences with one blank "_" and two options. Partial scoring,
as lm-eval and GPT-3: each option is substituted into the sentence up to the blank (the context),
and the rest of the sentence after the blank (shared by both options) is scored as the
continuation; the option under which it is likelier wins. ``acc_norm`` equals ``acc`` here (the
continuation is the same for both options).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalharness.core.task import Doc, register_task
from evalharness.data.datasets import Dataset, JsonLines
from evalharness.shapes.multiple_choice import PartialScoring


@register_task
class WinoGrande(PartialScoring):
    name = "winogrande"
    version = "1.0"
    template = "winogrande/partial.jinja"  # the gold option's context
    dataset = Dataset(
        "allenai/winogrande", "winogrande_xl", "validation",
        JsonLines(
            {"validation": "winogrande/winogrande_xl_validation.jsonl"}, ("sentence", "option1", "option2", "answer")
        ),
    )
    metrics = ("acc", "acc_norm")

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        sentence = record["sentence"]
        if "_" not in sentence:
            raise ValueError("the sentence has no blank '_'")
        if str(record["answer"]) not in ("1", "2"):
            raise ValueError(f"answer {record['answer']!r} is not 1 or 2")
        blank = sentence.index("_")  # the first, as lm-eval
        return {
            "contexts": [sentence[:blank] + record["option1"], sentence[:blank] + record["option2"]],
            "continuation": sentence[blank + 1 :].strip(),
            "answer": int(record["answer"]) - 1,
        }

    def option_contexts(self, doc: Doc) -> list[str]:
        return list(doc.fields["contexts"])

    def shared_continuation(self, doc: Doc) -> str:
        return str(doc.fields["continuation"])
