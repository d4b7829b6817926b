"""Find shared token prefixes and plan batches around them.

Detection is purely at the token level, so any task benefits without declaring anything: sort
the distinct inputs, and runs of neighbours whose common prefix is long form a group whose
prefix is computed once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from evalharness.backends.prompt_fitting import common_prefix_len

MIN_PREFIX = 32  # shorter shared prefixes are not worth a separate forward pass


@dataclass(frozen=True)
class Batch:
    prefix: tuple[int, ...]  # computed once; empty when the rows share nothing worth it
    rows: tuple[tuple[int, ...], ...]  # full inputs, longest first


def _groups(inputs: list[tuple[int, ...]]) -> list[tuple[int, list[tuple[int, ...]]]]:
    """(shared length, members) for runs of sorted inputs with a long common prefix."""
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


BatchSize = int | Callable[[int], int]  # fixed rows, or rows for a given longest length


def chunk(rows: Sequence[tuple[int, ...]], size: BatchSize, extra: int = 0) -> list[tuple[tuple[int, ...], ...]]:
    """Consecutive batches of ``rows`` (longest first); ``extra`` tokens are added per row."""
    out, start = [], 0
    while start < len(rows):
        n = size(len(rows[start]) + extra) if callable(size) else size
        out.append(tuple(rows[start : start + n]))
        start += n
    return out


def plan_batches(
    scored_from: Mapping[tuple[int, ...], int], batch_size: BatchSize, reuse_prefixes: bool = True
) -> list[Batch]:
    """Batches over the distinct inputs; ``scored_from[x]`` caps the prefix usable for ``x``."""
    ordered = sorted(scored_from)
    loose: list[tuple[int, ...]] = []
    batches: list[Batch] = []
    for shared, members in _groups(ordered) if reuse_prefixes else [(0, ordered)]:
        prefix_len = min([shared] + [scored_from[m] for m in members])
        if len(members) < 2 or prefix_len < MIN_PREFIX:
            loose.extend(members)
            continue
        prefix = members[0][:prefix_len]
        members.sort(key=lambda ids: (-len(ids), ids))
        batches += [Batch(prefix, rows) for rows in chunk(members, batch_size)]
    loose.sort(key=lambda ids: (-len(ids), ids))
    batches += [Batch((), rows) for rows in chunk(loose, batch_size)]
    return batches
