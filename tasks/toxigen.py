"""ToxiGen (Hartvigsen et al., 2022) as the Llama 2 card reports it: % toxic generations.

The model continues ToxiGen prompts (a list of about six ``- statement`` lines about one target
group, ending in ``-``) with T = 0.1, top-p 0.9 (seeded per prompt by the runner), up to the first
newline (64 new tokens by default). A toxicity classifier then scores every generation in one
batched pass. The card's number (Llama 2 7B: 21.25, lower is better) is the unweighted mean over
the 13 target groups of the percentage of generations flagged toxic (PROTOCOL.md §5, Table 45).

Prompts (``source=files``, the default): the raw ToxiGen prompt files
``toxigen/prompts/{hate,neutral}_<group>_1k.txt.gz``, BOTH files of each group, so a group's
percentage is over all its generations, whatever the prompt's label (the card reports one % per
group; open-instruct's reimplementation also uses both files). Each file is a subtask
(``toxigen_<group>_hate``, ``toxigen_<group>_neutral``), so ``--limit N`` means N prompts per
file; ``prompts_per_file=N`` (default 500) takes the first N lines in file order, duplicates kept
(the files repeat lines; results.json reports each file's unique count). A prompt is the raw line
with every two-character ``\\n`` turned into a newline, nothing else changed (two upstream files,
hate_black and hate_lgbtq, keep a stray backslash before some line breaks, as upstream).
Prompt ids are ``file:line`` (1-based line in the decompressed file).

``source=revised`` builds prompts from the revised set the paper names
(hosseini2023_revised_toxigen.json, Hosseini et al. 2023): for each group and label, prompt k is
6 statements drawn without replacement, seeded by ``prompt_seed``, group, label and k, in the same
``- …`` format (``evalharness.data.adapters.DrawnLists``). The paper does not say how it built
prompts from that set; this is OUR construction and is labelled so in results.json.

Classifier (``classifier=``, ``evalharness.scoring.toxicity_classifiers``): ``roberta`` (default)
is the paper's ``tomh/toxigen_roberta`` (or ``classifier_model=`` a local copy); offline the run
fails before generating, with a one-line error suggesting ``classifier=hatesonar-onnx``, an ONNX
lexical classifier recorded as approximate. It scores the generation with surrounding whitespace
stripped (the statement after ``- ``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.core.task import Doc, Finalized, Outcome, TaskContext, TaskResult, aggregate_groups, register_task
from evalharness.data.adapters import DrawnLists, prompt_line
from evalharness.data.datasets import Dataset, TextLines
from evalharness.data.source import DataSource
from evalharness.data.toxigen_groups import GROUPS, LABELS, Group, prompt_file
from evalharness.scoring.scorer import Scorer
from evalharness.scoring.toxicity_classifiers import ClassifierScorer
from evalharness.shapes.generating import option_choice, option_int
from evalharness.shapes.scored_generation import ScoredGeneration, prompt_counts

LOCAL_ONLY = (
    "toxigen's prompts are read from a local data root (toxigen/prompts/*_1k.txt.gz from"
    " github.com/microsoft/TOXIGEN, toxigen/hosseini2023_revised_toxigen.json from"
    " github.com/microsoft/SafeNLP); pass --data-dir"
)
SUBTASKS: dict[str, tuple[Group, str]] = {f"toxigen_{g.key}_{label}": (g, label) for g in GROUPS for label in LABELS}
SOURCES = ("files", "revised")
REVISED_FILE = "hosseini2023_revised_toxigen.json"
STATEMENTS_PER_PROMPT = 6
PROMPT_FILES = Dataset("", None, "prompts", TextLines("toxigen/prompts/{subset}", prompt_line), offline_hint=LOCAL_ONLY)
# source=revised: subset "<group>:<label>" (which also seeds its draws) → (label, the set's group name)
POOLS = {f"{g.key}:{label}": (label, g.revised) for g in GROUPS for label in LABELS}


def revised_prompts(seed: int, count: int) -> Dataset:
    adapter = DrawnLists(f"toxigen/{REVISED_FILE}", POOLS, count, seed, STATEMENTS_PER_PROMPT)
    return Dataset("", None, "prompts", adapter, offline_hint=LOCAL_ONLY)


@register_task
class ToxiGen(ScoredGeneration):
    name = "toxigen"
    version = "1.0"
    template = "toxigen/continue.jinja"
    dataset = PROMPT_FILES
    stop = ("\n",)
    temperature, top_p = 0.1, 0.9  # §4.1
    lower_is_better = frozenset({"toxic", "toxic_mean_of_groups", "toxic_pooled"})
    defaults = {
        "prompts_per_file": 500,
        "source": "files",
        "prompt_seed": 0,  # source=revised only
        "classifier": "roberta",  # or hatesonar-onnx
        "classifier_model": "",  # hub id or local path; default per classifier
        "classifier_batch_size": 32,
        "max_new_tokens": 64,
    }

    def check_options(self) -> None:
        super().check_options()
        count = option_int(self, "prompts_per_file")
        option_int(self, "classifier_batch_size")
        if option_choice(self, "source", SOURCES) == "revised":
            self.dataset = revised_prompts(self.options["prompt_seed"], count)
        self.scorer(None)  # an unknown classifier name fails here

    def subtasks(self) -> list[str]:
        return list(SUBTASKS)

    def subset(self, subtask: str) -> str:
        group, label = SUBTASKS[subtask]
        return prompt_file(group, label) if self.options["source"] == "files" else f"{group.key}:{label}"

    def documents(self, data: DataSource, subtask: str) -> list[Doc]:
        return super().documents(data, subtask)[: option_int(self, "prompts_per_file")]

    def template_vars(self, doc: Doc) -> Mapping[str, Any]:
        return {"prompt": doc.fields["prompt"]}

    def target(self, doc: Doc) -> str:
        return ""  # zero-shot: there are no answered examples

    def details(self, doc: Doc) -> dict[str, Any]:
        group, label = SUBTASKS[doc.subtask]
        return {"prompt_id": doc.fields["prompt_id"], "group": group.key, "label": label}

    def scorer(self, data_dir: str | None) -> Scorer:
        return ClassifierScorer(
            str(self.options["classifier"]), str(self.options["classifier_model"]), data_dir,
            option_int(self, "classifier_batch_size"),
        )  # fmt: skip

    def finalize(self, scored: Sequence[tuple[Doc, Outcome]], context: TaskContext) -> Finalized:
        judged = super().finalize(scored, context)
        files = self.subset if self.options["source"] == "files" else lambda _: REVISED_FILE
        return Finalized(judged.outcomes, {
            **judged.provenance, "prompts": prompt_counts(scored, files),
            "empty_generations": sum(1 for _, outcome in scored if not str(outcome.output).strip()),
        })  # fmt: skip

    def aggregate(self, outcomes: Mapping[str, Sequence[Outcome]]) -> TaskResult:
        # hate and neutral prompts pooled per group; the card's headline is toxic_mean_of_groups
        return aggregate_groups(outcomes, "toxic", lambda subtask: SUBTASKS[subtask][0].key, [g.key for g in GROUPS])

    def config(self) -> dict[str, Any]:
        source = self.options["source"]
        return {
            **super().config(),
            "prompt_source": (
                "ToxiGen prompt files toxigen/prompts/{hate,neutral}_<group>_1k.txt.gz"
                " (github.com/microsoft/TOXIGEN), first prompts_per_file lines of each, hate and neutral pooled per group"
                if source == "files" else
                f"OUR construction from {REVISED_FILE} (Hosseini et al. 2023; the paper does not say how it"
                f" built prompts): per group and label, {STATEMENTS_PER_PROMPT} statements drawn with"
                f" prompt_seed={self.options['prompt_seed']}, in the '- …' list format"
            ),
            "prompt_construction": "ours" if source == "revised" else "upstream",
            "groups_table": {g.key: g.card for g in GROUPS},
            "default_decoding": {**self.decoding(), "seeded": "per prompt, from --seed"},
            "aggregation": "toxic_mean_of_groups = unweighted mean of the per-group % (the card's);"
                           " toxic_pooled = % over all generations",
        }  # fmt: skip
