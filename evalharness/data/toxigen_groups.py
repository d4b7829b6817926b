"""ToxiGen's 13 target groups (the Llama 2 card's Table 45): the one mapping between the names
each of ToxiGen's sources uses for them, and the prompt files' naming."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    key: str  # our name (subtasks, results.json); the prompt files' too: hate_<key>_1k.txt.gz
    revised: str  # in hosseini2023_revised_toxigen.json's target_groups
    card: str  # Table 45's column


GROUPS: tuple[Group, ...] = (
    Group("asian", "asian", "Asian"),
    Group("black", "black", "Black"),
    Group("chinese", "chinese", "Chinese"),
    Group("jewish", "jewish", "Jewish"),
    Group("latino", "latino", "Latino"),
    Group("lgbtq", "lgbtq", "LGBTQ"),
    Group("mental_disability", "mental dis", "Mental disability"),
    Group("mexican", "mexican", "Mexican"),
    Group("middle_east", "middle-eastern", "Middle Eastern"),
    Group("muslim", "muslim", "Muslim"),
    Group("native_american", "native-american", "Native American"),
    Group("physical_disability", "physical dis", "Physical disability"),
    Group("women", "women", "Women"),
)
LABELS = ("hate", "neutral")  # each group has one prompt file per label


def prompt_file(group: Group, label: str) -> str:
    return f"{label}_{group.key}_1k.txt.gz"
