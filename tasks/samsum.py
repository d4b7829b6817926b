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

from evalharness.data.source import DataSource
from evalharness.core.errors import DataError
from evalharness.core.task import Doc, register_task
from evalharness.tasks.cnn_dailymail import SummarizationTask

HUB_ID = "Samsung/samsum"


@register_task
class SAMSum(SummarizationTask):
    name = "samsum"
    version = "1.0"
    template = "samsum/summarize_helm.jinja"
    source_field = "dialogue"
    reference_field = "summary"
    variants = {"helm": "samsum/summarize_helm.jinja", "tldr": "samsum/summarize_tldr.jinja"}

    def documents(self, data: DataSource, subtask: str) -> list[Doc]:
        self.check_metrics()
        if data.is_local:
            rows = data.read_jsonl("samsum", "test.jsonl", required=("id", "dialogue", "summary"))
        else:
            rows = list(data.hub(HUB_ID, None, "test"))
        docs = []
        for i, row in enumerate(rows):
            if not isinstance(row["dialogue"], str) or not row["dialogue"].strip():
                raise DataError(f"samsum test row {i + 1}: empty dialogue")
            docs.append(Doc(subtask, i, {"id": str(row["id"]), "dialogue": row["dialogue"],
                                         "summary": row["summary"].strip()}))
        return docs

    def template_vars(self, doc: Doc) -> Mapping[str, Any]:
        return {"dialogue": doc.fields["dialogue"].replace("\r\n", "\n").strip()}
