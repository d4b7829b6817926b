"""HumanEval (Chen et al., 2021), 0-shot, as in the Llama 2 card's Code group (Table 21).

The prompt is each problem's ``prompt`` exactly as released (signature and docstring, ending in a
newline); the model completes the function body until ``\\ndef``, ``\\nclass``, ``\\nif``,
``\\nprint``, ``\\n#`` or EOS (the Codex paper's stop sequences). The program run is
``prompt + completion + "\\n" + test + "\\n" + "check(entry_point)"``, as OpenAI's human-eval
builds it, inside the code sandbox; it passes when it exits 0. pass@k per problem, averaged over
the 164 problems; decoding and ``samples``/``pass_at`` as in ``evalharness.shapes.code_generation``.

Data: ``humaneval/HumanEval.jsonl.gz`` (OpenAI's release) or the hub's ``openai/openai_humaneval``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalharness.core.task import Doc, register_task
from evalharness.data.datasets import Dataset, JsonLines
from evalharness.shapes.code_generation import CodeGeneration

FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


@register_task
class HumanEval(CodeGeneration):
    name = "humaneval"
    version = "1.0"
    template = "humaneval/docstring.jinja"
    dataset = Dataset("openai/openai_humaneval", None, "test", JsonLines("humaneval/HumanEval.jsonl.gz", FIELDS))
    stop = ("\ndef", "\nclass", "\nif", "\nprint", "\n#")
    card_k = 100

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        for key in FIELDS:
            if not isinstance(record[key], str):
                raise ValueError(f"{key} must be a string")
        return {key: record[key] for key in FIELDS}

    def template_vars(self, doc: Doc) -> Mapping[str, Any]:
        return {"prompt": doc.fields["prompt"]}

    def target(self, doc: Doc) -> str:
        return str(doc.fields["canonical_solution"])  # 0-shot: never shown

    def details(self, doc: Doc) -> dict[str, Any]:
        return {"task_id": doc.fields["task_id"]}

    def program(self, doc: Doc, completion: str) -> str:
        f = doc.fields
        return f"{f['prompt']}{completion}\n{f['test']}\ncheck({f['entry_point']})\n"
