"""SAMSum (Gliwa et al., 2019), test split: zero-shot dialogue summarisation.

The card's summarisation fine-tuning sample uses SAMSum; here it is a small second
summarisation task with the same protocol as ``cnn_dailymail``: the dialogue, then an
instruction (default "###\\nDialogue:\\n{dialogue}\\n\\nSummarize the above dialogue.\\n",
stopping at "###"; ``--task-args template=tldr`` gives "{dialogue}\\nTL;DR:"), greedy, 128 new
tokens, ROUGE-1/2/L/Lsum F-measures against the reference summary (rouge-score, Porter
stemmer), averaged over the 819 dialogues, with 95% bootstrap intervals. The dialogues' CRLF line
breaks (724 of 819) are normalised to LF in the prompt. Overflowing prompts lose the start of
the dialogue, never the instruction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalharness.core.task import Doc, register_task
from evalharness.data.datasets import Dataset, JsonLines
from evalharness.shapes.summarisation import ReferenceOverlap


def dialogue_record(record: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(record["dialogue"], str) or not record["dialogue"].strip():
        raise ValueError("empty dialogue")
    return {"id": str(record["id"]), "dialogue": record["dialogue"], "summary": record["summary"].strip()}


@register_task
class SAMSum(ReferenceOverlap):
    name = "samsum"
    version = "1.0"
    template = "samsum/summarize_helm.jinja"
    dataset = Dataset("Samsung/samsum", None, "test", JsonLines("samsum/test.jsonl", ("id", "dialogue", "summary")))
    source_field = "dialogue"
    reference_field = "summary"
    variants = {"helm": "samsum/summarize_helm.jinja", "tldr": "samsum/summarize_tldr.jinja"}

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        return dialogue_record(record)

    def template_vars(self, doc: Doc) -> Mapping[str, Any]:
        return {"dialogue": doc.fields["dialogue"].replace("\r\n", "\n").strip()}
