"""SQuAD 2.0 (Rajpurkar et al., 2018), 0-shot generation, the card's SQuAD (exact match).

All 11,873 dev questions (5,945 of them unanswerable). Prompt: lm-eval's ``squadv2`` reading
prompt, "Title: …\\n\\nBackground: <paragraph>\\n\\nQuestion: …\\n\\nAnswer:"; greedy, stop at a
newline, 32 new tokens. The prediction is the first line of the output, stripped.

**Unanswerable questions.** As in the official ``evaluate-v2.0.py``, their only reference is
the empty answer, so they score 1 only for an empty prediction. The model says "unanswerable" with
an empty first line, or with the word "unanswerable" (lm-eval's target for these questions), which
is read as the empty answer; any other text scores 0. (The official script's no-answer-probability
threshold is not used: ``exact_match`` is the script's ``exact`` with the threshold at 1.0, as in
lm-eval.) Metrics: ``exact_match`` (the card's), ``f1``, and both again on answerable
(``*_has_ans``) and unanswerable (``*_no_ans``) questions.

Long paragraphs: the prompt is cut from the left (title first, then the beginning of the
paragraph); the question and "Answer:" are never cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.core.averages import mean_with_stderr
from evalharness.core.requests import Response
from evalharness.core.task import Doc, Outcome, Prompt, TaskResult, register_task
from evalharness.data.datasets import Dataset, JsonDocument
from evalharness.shapes.answer_extraction import exact_match, first_line, normalize_text, token_f1
from evalharness.shapes.short_answer import ShortAnswer
from evalharness.shapes.summarisation import instruction_chars

NO_ANSWER_WORDS = frozenset({"", "unanswerable"})  # normalised first lines read as "no answer"


def from_squad_json(document: Any) -> list[dict[str, Any]]:
    """The official nested SQuAD JSON (answer offsets not needed) → the hub's flat records."""
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise ValueError("expected {'data': [articles]}")
    records = []
    for a, article in enumerate(document["data"], start=1):
        for p, paragraph in enumerate(article["paragraphs"], start=1):
            for qa in paragraph["qas"]:
                where = f"article {a}, paragraph {p}, question {qa.get('id', '?')}"
                if not isinstance(qa.get("question"), str) or not isinstance(qa.get("answers"), list):
                    raise ValueError(f"{where}: needs a question and a list of answers")
                texts = [answer["text"] for answer in qa["answers"]]
                records.append({"id": qa["id"], "title": article["title"], "context": paragraph["context"],
                                "question": qa["question"], "answers": {"text": texts}})
    return records


def no_answer_as_empty(generation: str) -> str:
    """The first line of the output; "unanswerable" (or nothing) becomes the empty answer."""
    line = first_line(generation)
    return "" if normalize_text(line) in NO_ANSWER_WORDS else line


@register_task
class SQuADv2(ShortAnswer):
    name = "squad_v2"
    version = "1.0"
    template = "squad_v2/default.jinja"
    dataset = Dataset(
        "rajpurkar/squad_v2", None, "validation",
        JsonDocument({"validation": "squad_v2/dev-v2.0.no-offsets.json.gz"}, from_squad_json),
    )  # fmt: skip
    stop = ("\n",)
    extractors = {"": no_answer_as_empty}
    comparisons = {"exact_match": exact_match, "f1": token_f1}
    defaults = {"samples": 1, "max_new_tokens": 32, "pass_at": 0}

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        texts = record["answers"]["text"]
        if not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError("answer texts must be non-empty strings")
        return {key: record[key] for key in ("id", "title", "context", "question")} | {"answers": list(texts)}

    def references(self, doc: Doc) -> Sequence[str]:
        return list(doc.fields["answers"]) or [""]  # unanswerable: only the empty answer is right

    def protected_chars(self, doc: Doc, prompt: Prompt) -> int:
        return instruction_chars(prompt, str(doc.fields["context"]))

    def score(self, doc: Doc, responses: Sequence[Response]) -> Outcome:
        outcome = super().score(doc, responses)
        kind = "has_ans" if doc.fields["answers"] else "no_ans"
        return Outcome(outcome.output, outcome.prediction, outcome.gold, outcome.metrics, {"kind": kind})

    def aggregate(self, outcomes: Mapping[str, Sequence[Outcome]]) -> TaskResult:
        result = super().aggregate(outcomes)
        scored = [o for docs in outcomes.values() for o in docs]
        split = {
            f"{metric}_{kind}": mean_with_stderr([o.metrics[metric] for o in scored if o.extra["kind"] == kind])
            for metric in self.comparisons for kind in ("has_ans", "no_ans")
            if any(o.extra["kind"] == kind for o in scored)
        }  # fmt: skip
        return TaskResult({**result.metrics, **split}, result.subtasks, result.groups, result.details)
