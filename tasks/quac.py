"""QuAC (Choi et al., 2018), 0-shot, the card's QuAC (F1). Loads from the hub only.

There is no local copy of QuAC (see ../shared/data/README.md, "Not obtained"), so with --data-dir
the task says so in one line; inside a group (``reading_comprehension``, ``llama2_card``) it is
skipped with a warning and the report shows it as not run.

Each of the 7,354 validation questions is one document. The prompt gives the article title, its
background, the section title and the section text, then the dialogue so far with the gold
answers (QuAC's evaluation protocol), then "Q: <question>\\nA:"; greedy, stop at a newline, 48
new tokens. ``f1`` is the SQuAD token F1 against the closest reference answer; a question whose
references say CANNOTANSWER is right only when the model says "CANNOTANSWER" (or nothing).
Approximations: the official scorer's leave-one-out F1 over references, its HEQ metrics and the
follow-up/yes-no dialogue acts are not computed. Long sections are cut from the left; the
dialogue history and the question are never cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.core.errors import DataError
from evalharness.core.task import Doc, Prompt, register_task
from evalharness.data.datasets import Dataset
from evalharness.data.source import DataSource
from evalharness.shapes.answer_extraction import exact_match, first_line, normalize_text, token_f1
from evalharness.shapes.short_answer import ShortAnswer
from evalharness.shapes.summarisation import instruction_chars

CANNOT_ANSWER = "CANNOTANSWER"


def as_cannot_answer(generation: str) -> str:
    """The first line of the output; an empty one is QuAC's CANNOTANSWER."""
    line = first_line(generation)
    return CANNOT_ANSWER if normalize_text(line) in ("", "cannotanswer") else line


def dialogue_questions(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One hub record (a dialogue) → one document per question, with the turns before it."""
    questions, answers = record["questions"], record["answers"]["texts"]
    if len(questions) != len(answers):
        raise ValueError(f"dialogue {record.get('dialogue_id')}: {len(questions)} questions, {len(answers)} answers")
    passage = str(record["context"]).removesuffix(CANNOT_ANSWER).rstrip()
    docs = []
    for turn, (question, references) in enumerate(zip(questions, answers, strict=True)):
        history = [{"question": q, "answer": refs[0]} for q, refs in zip(questions[:turn], answers[:turn], strict=True)]
        docs.append({
            "title": record["wikipedia_page_title"], "background": record["background"],
            "section_title": record["section_title"], "passage": passage, "history": history,
            "question": question, "answers": list(references),
        })  # fmt: skip
    return docs


@register_task
class QuAC(ShortAnswer):
    name = "quac"
    version = "1.0"
    template = "quac/dialogue.jinja"
    dataset = Dataset(
        "allenai/quac", "plain_text", "validation",
        offline_hint="QuAC is not available offline (no local copy; see the data README's 'Not obtained')",
    )
    stop = ("\n",)
    extractors = {"": as_cannot_answer}
    comparisons = {"f1": token_f1, "exact_match": exact_match}
    defaults = {"samples": 1, "max_new_tokens": 48, "pass_at": 0}

    def documents(self, data: DataSource, subtask: str) -> list[Doc]:
        assert self.dataset is not None
        where = self.dataset.where(data, self.dataset.split)
        dialogues = self.dataset.records(data, self.dataset.split)
        docs: list[Doc] = []
        for number, record in enumerate(dialogues, start=1):
            try:
                questions = dialogue_questions(record)
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{where}, dialogue {number}: {exc}") from None
            docs += [Doc(subtask, len(docs) + i, fields) for i, fields in enumerate(questions)]
        return docs

    def references(self, doc: Doc) -> Sequence[str]:
        return list(doc.fields["answers"])

    def protected_chars(self, doc: Doc, prompt: Prompt) -> int:
        return instruction_chars(prompt, str(doc.fields["passage"]))
