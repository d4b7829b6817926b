"""Find shared token prefixes and plan batches around them.

Detection is purely at the token level, so any task benefits without declaring anything: sort
the distinct inputs; runs of neighbours with a long common prefix (a subject's 5-shot exemplars)
form a group whose prefix is computed once and cached; and inputs that share a shorter head (one
document's answer choices) are *packed*: laid out in one row as the head once, then each input's
remainder, each remainder attending to the head and to itself only (see ``Pack``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from evalharness.backends.prompt_fitting import common_prefix_len

MIN_PREFIX = 32  # shorter shared prefixes are not worth a separate forward pass
# A group whose members fit one packed row this short is packed rather than cached: a row per
# document, batched across documents, beats a forward pass per document.
PACK_TOKENS = 512
PACK_MEMBERS = 16
MIN_PACK_GAIN = 4  # tokens a member must save to join a pack (its own attention mask costs a little)


@dataclass(frozen=True)
class Pack:
    """One forward row: ``members`` (full inputs) that share their first ``head`` tokens.

    The row holds ``members[0][offset:head]`` once, then ``m[head:]`` for each member, where
    ``offset`` is the batch's cached prefix. Each remainder keeps its own positions (from
    ``head`` on) and sees only the head and itself, so its outputs are those of its own sequence.
    A single member is a plain row (its head is the cached prefix).
    """

    head: int
    members: tuple[tuple[int, ...], ...]

    @property
    def length(self) -> int:
        return self.head + sum(len(m) - self.head for m in self.members)

    def starts(self, offset: int) -> list[int]:
        """Column of each member's first own token (position ``head``) in the row."""
        out, column = [], self.head - offset
        for member in self.members:
            out.append(column)
            column += len(member) - self.head
        return out


@dataclass(frozen=True)
class Batch:
    prefix: tuple[int, ...]  # computed once; empty when the rows share nothing worth it
    packs: tuple[Pack, ...]  # forward rows, longest first

    @property
    def rows(self) -> tuple[tuple[int, ...], ...]:
        """Every distinct input in the batch."""
        return tuple(m for pack in self.packs for m in pack.members)


def prefix_groups(inputs: list[tuple[int, ...]]) -> list[tuple[int, list[tuple[int, ...]]]]:
    """(shared length, members) for runs of sorted inputs with a long common prefix: one
    subject's or subtask's few-shot exemplars. A lone input is a group of one, shared length 0."""
    groups: list[tuple[int, list[tuple[int, ...]]]] = []
    current: list[tuple[int, ...]] = []
    shared = 0
    for item in inputs:
        if current:
            lcp = common_prefix_len(current[-1], item)
            # Stay in the group while the common part stays long, relative to the group's own.
            if lcp >= MIN_PREFIX and (len(current) == 1 or lcp * 2 >= shared):
                shared = lcp if len(current) == 1 else min(shared, lcp)
                current.append(item)
                continue
            groups.append((shared, current))
        current, shared = [item], 0
    if current:
        groups.append((shared, current))
    return groups


def pack_rows(ordered: Sequence[tuple[int, ...]], scored_from: Mapping[tuple[int, ...], int], offset: int) -> list[Pack]:
    """Greedy packs over sorted inputs: a neighbour joins when the shared head saves tokens.

    A head never reaches a member's scored positions (``scored_from``), so every scored output
    comes from the member's own tokens.
    """
    packs: list[Pack] = []
    members: list[tuple[int, ...]] = []
    head = offset
    for item in ordered:
        if members:
            limit = scored_from[members[0]] if len(members) == 1 else head
            shared = min(limit, scored_from[item], common_prefix_len(members[-1], item))
            # Tokens saved against a row of its own (a lone member's head is the cached prefix).
            gain = len(members) * shared - (len(members) - 1) * head - offset
            grown = Pack(shared, (*members, item))
            if gain >= MIN_PACK_GAIN and grown.length - offset <= PACK_TOKENS and len(members) < PACK_MEMBERS:
                members.append(item)
                head = shared
                continue
            packs.append(Pack(head, tuple(members)))
        members, head = [item], offset
    if members:
        packs.append(Pack(head, tuple(members)))
    return packs


BatchSize = int | Callable[[int], int]  # fixed rows, or rows for a given longest length


def chunk(packs: Sequence[Pack], size: BatchSize) -> list[tuple[Pack, ...]]:
    """Consecutive batches of ``packs`` (longest first)."""
    out, start = [], 0
    while start < len(packs):
        n = size(packs[start].length) if callable(size) else size
        out.append(tuple(packs[start : start + n]))
        start += n
    return out


def _longest_first(packs: list[Pack]) -> list[Pack]:
    return sorted(packs, key=lambda p: (-p.length, p.members))


def plan_batches(
    scored_from: Mapping[tuple[int, ...], int], batch_size: BatchSize, reuse_prefixes: bool = True, pack: bool = True
) -> list[Batch]:
    """Batches over the distinct inputs; ``scored_from[x]`` caps the prefix usable for ``x``.

    ``pack=False`` (an attention that takes no custom mask) keeps one input per row.
    """
    ordered = sorted(scored_from)
    loose: list[tuple[int, ...]] = []
    batches: list[Batch] = []
    for shared, members in prefix_groups(ordered) if reuse_prefixes else [(0, ordered)]:
        prefix_len = min([shared] + [scored_from[m] for m in members])
        packed_length = sum(len(m) for m in members) - (len(members) - 1) * prefix_len
        fits_one_pack = len(members) <= PACK_MEMBERS and packed_length <= PACK_TOKENS
        if len(members) < 2 or prefix_len < MIN_PREFIX or (pack and fits_one_pack):
            loose.extend(members)
            continue
        rows = pack_rows(members, scored_from, prefix_len) if pack else [Pack(prefix_len, (m,)) for m in members]
        batches += [Batch(members[0][:prefix_len], b) for b in chunk(_longest_first(rows), batch_size)]
    loose.sort()
    rows = pack_rows(loose, scored_from, 0) if pack and reuse_prefixes else [Pack(0, (m,)) for m in loose]
    batches += [Batch((), b) for b in chunk(_longest_first(rows), batch_size)]
    return batches
