"""TriviaQA (Joshi et al., 2017), Wikipedia validation set, 5-shot, the card's TriviaQA (exact match).

The 7,993 questions of ``rc.wikipedia.nocontext`` validation, asked closed-book with the Llama
papers' prompt: "Answer these questions:" on one line, then five answered "Q: …\\nA: …" pairs and
the test question. Greedy, stop at a newline, 32 new tokens; the prediction is the first line, and
it scores 1 when it equals any alias (``answer.aliases`` and ``answer.normalized_aliases``) after
SQuAD normalisation (case, punctuation, articles, whitespace).

Few-shot examples: the first five questions of the train pool, the same for every question
(``first_n``, recorded in results.json). Offline the pool is DPR's 8,837-question held-out part of
the unfiltered train split (triviaqa/unfiltered_train_subset.question_aliases.jsonl.gz), which
lists aliases but not the canonical answer, so the answer shown is the most typical alias (the one
whose words recur most across the aliases: "Helicopter", not the first alias "🚁"); online it is
the hub's rc.wikipedia.nocontext train split, whose ``answer.value`` is shown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.core.task import Doc, register_task
from evalharness.data.datasets import Dataset, Fewshot, JsonLines
from evalharness.shapes.answer_extraction import normalize_text
from evalharness.shapes.short_answer import ClosedBookQA

HUB = ("mandarjoshi/trivia_qa", "rc.wikipedia.nocontext")
VALIDATION = Dataset(*HUB, "validation", JsonLines(
    {"validation": "triviaqa/rc.wikipedia.nocontext_validation.jsonl.gz"}, ("question", "answer")))
TRAIN = Dataset(*HUB, "train", JsonLines(
    {"train": "triviaqa/unfiltered_train_subset.question_aliases.jsonl.gz"}, ("question", "answers")))


def typical_alias(aliases: Sequence[str]) -> str:
    """The alias whose words occur in the most aliases, on average (ties: the first)."""
    words = [set(normalize_text(a).split()) for a in aliases]
    counts = Counter(w for ws in words for w in ws)
    scores = [sum(counts[w] for w in ws) / len(ws) if ws else 0.0 for ws in words]
    return aliases[max(range(len(aliases)), key=scores.__getitem__)]


@register_task
class TriviaQA(ClosedBookQA):
    name = "triviaqa"
    version = "1.0"
    template = "triviaqa/qa.jinja"
    dataset = VALIDATION
    fewshot = Fewshot("train", "first_n", TRAIN,
                      note="offline: the first 5 of DPR's held-out unfiltered-train questions, shown with their most"
                           " typical alias; online: the hub's rc.wikipedia.nocontext train split")

    def record_to_doc(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        if not isinstance(record["question"], str):
            raise ValueError("the question must be a string")
        if "answers" in record:  # the local few-shot pool: {question, answers[]}
            aliases = [str(a) for a in record["answers"]]
            if not aliases:
                raise ValueError("empty list of answers")
            return {"question": record["question"], "aliases": aliases, "shown": typical_alias(aliases)}
        answer = record["answer"]
        aliases = [str(a) for a in [*answer["aliases"], *answer.get("normalized_aliases", [])]]
        if not aliases:
            raise ValueError("the answer has no aliases")
        return {"question": record["question"], "aliases": aliases, "shown": str(answer.get("value") or aliases[0])}

    def references(self, doc: Doc) -> Sequence[str]:
        return list(doc.fields["aliases"])

    def target(self, doc: Doc) -> str:
        return str(doc.fields["shown"])
