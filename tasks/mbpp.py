"""MBPP (Austin et al., 2021), 3-shot, as in the Llama 2 card's Code group (Table 21).

The 500 test problems (task ids 11–510) follow the three prompt problems with task ids 2, 3
and 4, in Austin et al.'s format as lm-eval renders it: each problem is "You are an expert Python
programmer, and here is your task: {text} Your code should pass these tests:\\n\\n{the three
asserts}\\n[BEGIN]", an example adds "\\n{code}\\n[DONE]", examples are separated by a blank line,
and the test problem ends at "[BEGIN]". The model writes code until "[DONE]" (or EOS). The
program run is the completion, the problem's ``test_setup_code`` (one problem has some) and its
three asserts, one per line, in the code sandbox; it passes when it exits 0. The example code
keeps the release's ``\\r\\n`` line ends, as lm-eval does.

Data: ``mbpp/mbpp.jsonl`` (the full release; splits by task id: prompt 1–10, test 11–510,
validation 511–600, train 601–974) or the hub's ``google-research-datasets/mbpp`` (``full``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evalharness.core.errors import DataError
from evalharness.core.task import Doc, register_task
from evalharness.data.datasets import Dataset, Fewshot, Record
from evalharness.data.source import DataSource
from evalharness.shapes.code_generation import CodeGeneration

FIELDS = ("task_id", "text", "code", "test_list", "test_setup_code")
SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
SHOTS = (2, 3, 4)  # Austin et al.'s few-shot problems


@dataclass(frozen=True)
class MbppSplit:
    """The full mbpp.jsonl, one split of it by task id (the hub's splits)."""

    path: str = "mbpp/mbpp.jsonl"

    def read(self, data: DataSource, split: str, subset: str | None) -> list[Record]:
        parts = self.path.split("/")
        low, high = SPLITS[split]
        rows = data.read_jsonl(*parts, required=FIELDS)
        picked = [r for r in rows if isinstance(r["task_id"], int) and low <= r["task_id"] <= high]
        if len(picked) != high - low + 1:
            where = data.root.joinpath(*parts) if data.root else self.path
            raise DataError(f"{where}: expected task ids {low}-{high} ({high - low + 1} rows), found {len(picked)}")
        return sorted(picked, key=lambda r: r["task_id"])


@register_task
class MBPP(CodeGeneration):
    name = "mbpp"
    version = "1.0"
    template = "mbpp/austin.jinja"
    dataset = Dataset("google-research-datasets/mbpp", "full", "test", MbppSplit())
    fewshot = Fewshot("prompt", "first_n", note="task ids 2, 3, 4 of the prompt split (Austin et al.)")
    default_fewshot = 3
    target_delimiter = "\n"
    fewshot_delimiter = "\n\n"
    stop = ("[DONE]",)
    card_k = 80

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        tests = record["test_list"]
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
            raise ValueError("test_list must be a non-empty list of strings")
        return {
            "task_id": record["task_id"], "text": str(record["text"]), "code": str(record["code"]),
            "test_list": list(tests), "test_setup_code": str(record.get("test_setup_code") or ""),
        }  # fmt: skip

    def fewshot_pool(self, data: DataSource, subtask: str) -> list[Doc]:
        pool = super().fewshot_pool(data, subtask)
        return sorted((d for d in pool if d.fields["task_id"] in SHOTS), key=lambda d: SHOTS.index(d.fields["task_id"]))

    def template_vars(self, doc: Doc) -> Mapping[str, Any]:
        return {"text": doc.fields["text"], "tests": "\n".join(doc.fields["test_list"])}

    def target(self, doc: Doc) -> str:
        return f"{doc.fields['code']}\n[DONE]"

    def details(self, doc: Doc) -> dict[str, Any]:
        return {"task_id": doc.fields["task_id"]}

    def program(self, doc: Doc, completion: str) -> str:
        setup = doc.fields["test_setup_code"]
        tests = "\n".join(doc.fields["test_list"])
        return f"{completion.strip()}\n{setup + chr(10) if setup else ''}{tests}\n"
