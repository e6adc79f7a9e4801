"""Key-space splitting as pure functions.

A table's primary-key space is cut at *boundaries* (key values in PostgreSQL's
own order) into contiguous half-open ranges ``[lower, upper)``. The first range
has no lower bound and the last no upper bound, so a row that exists only on
some node, beyond every key the planner saw, still falls in some range.

Invariants (tested): ranges are in order, each range's upper bound is the next
range's lower bound, the first lower and last upper are ``None``, and indexes
run 0..n-1. No function here does I/O; boundaries come from the database.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ace_shared.config import TASKS_PER_SLOT

Key = tuple[str, ...]

SUBRANGES = 16  # sub-ranges a range is hashed in, and narrowed to, at each step


@dataclass(frozen=True)
class KeyRange:
    """Rows with ``lower <= key < upper``; ``None`` means unbounded on that side.

    ``inner`` holds cut points strictly inside the range, in order: the first
    hash of the range is taken per sub-range between them, so a range that
    differs is already narrowed to its differing sub-ranges.
    """

    index: int
    lower: Key | None
    upper: Key | None
    inner: tuple[Key, ...] = ()

    def to_json(self) -> list[object]:
        return [self.index, list(self.lower) if self.lower else None,
                list(self.upper) if self.upper else None, [list(k) for k in self.inner]]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> KeyRange:
        index, lower, upper = data[:3]
        inner = data[3] if len(data) > 3 else []
        return cls(int(index),
                   tuple(lower) if lower else None,
                   tuple(upper) if upper else None,
                   tuple(tuple(k) for k in inner))


def dedupe_sorted(keys: Iterable[Key]) -> list[Key]:
    """Drop adjacent duplicates from keys already in database order."""
    out: list[Key] = []
    for k in keys:
        if not out or out[-1] != k:
            out.append(k)
    return out


def pick_boundaries(sorted_keys: Sequence[Key], parts: int) -> list[Key]:
    """Choose ``parts - 1`` boundaries that cut ``sorted_keys`` into near-equal parts."""
    keys = dedupe_sorted(sorted_keys)
    if parts <= 1 or not keys:
        return []
    if len(keys) < parts:
        return keys[1:] if len(keys) > 1 else keys[:]
    step = len(keys) / parts
    chosen = [keys[min(len(keys) - 1, math.floor(step * i))] for i in range(1, parts)]
    return dedupe_sorted(chosen)


def sorted_everywhere(ranks: Sequence[Sequence[int]]) -> list[int]:
    """Indexes of the boundaries that every node sorts in the planner's order.

    ``ranks[x][i]`` is where node ``x`` puts boundary ``i`` when it sorts them.
    A key column can sort differently on two nodes (an enum whose labels were
    added in another order, a collation that changed with the C library); a
    boundary some node puts out of place would make that node's ranges overlap
    and report a row twice. Both ends of every out-of-order neighbour pair are
    dropped until each node's ranks increase along what is kept; dropping a
    boundary only merges two ranges.
    """
    kept = list(range(len(ranks[0]))) if ranks else []
    while True:
        bad: set[int] = set()
        for a, b in zip(kept, kept[1:], strict=False):
            if any(r[a] >= r[b] for r in ranks):
                bad.update((a, b))
        if not bad:
            return kept
        kept = [i for i in kept if i not in bad]


def plan_ranges(cuts: Sequence[Key], parts: int, fanout: int) -> list[KeyRange]:
    """Ranges from strictly increasing ``cuts``: ``parts - 1`` of them, evenly spaced, bound
    the ranges; up to ``fanout - 1`` of those between, evenly spaced, cut each range inside.
    """
    if parts <= 1 or not cuts:
        chosen: list[int] = []
    elif len(cuts) < parts:
        chosen = list(range(len(cuts)))
    else:
        step = len(cuts) / parts
        chosen = sorted({min(len(cuts) - 1, math.floor(step * i)) for i in range(1, parts)})
    edges = [-1, *chosen, len(cuts)]
    out = []
    for i in range(len(edges) - 1):
        lo, hi = edges[i], edges[i + 1]
        between = list(range(lo + 1, hi))
        if len(between) >= fanout:
            step = len(between) / fanout
            between = sorted({between[math.floor(step * j)] for j in range(1, fanout)})
        out.append(KeyRange(i, cuts[lo] if lo >= 0 else None,
                            cuts[hi] if hi < len(cuts) else None,
                            tuple(cuts[j] for j in between)))
    return out


def ranges_from_boundaries(boundaries: Sequence[Key]) -> list[KeyRange]:
    """Cut the whole key space at ``boundaries`` (strictly increasing) into ranges."""
    bounds: list[Key | None] = [None, *boundaries, None]
    return [KeyRange(i, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def split_range(parent: KeyRange, inner: Sequence[Key]) -> list[KeyRange]:
    """Cut one range at ``inner`` boundaries (all strictly inside it, increasing)."""
    bounds: list[Key | None] = [parent.lower, *dedupe_sorted(inner), parent.upper]
    return [KeyRange(i, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def batches(ranges: Sequence[KeyRange], batch_size: int) -> list[list[KeyRange]]:
    """Group consecutive ranges, ``batch_size`` to a group (one task each)."""
    size = max(1, batch_size)
    return [list(ranges[i:i + size]) for i in range(0, len(ranges), size)]


def even_sizes(total: int, parts: int) -> list[int]:
    """``total`` cut into ``parts`` (at most ``total``) sizes differing by one, larger first."""
    count = max(1, min(parts, total))
    size, extra = divmod(total, count)
    return [size + (1 if i < extra else 0) for i in range(count)] if total else []


def tapered_sizes(total: int, slots: int, waves: int = TASKS_PER_SLOT) -> list[int]:
    """Task sizes for ``total`` ranges on ``slots`` worker processes, largest first.

    The tasks come in ``waves`` waves of ``slots`` tasks, and wave ``w`` (from 0)
    holds ranges in proportion to ``waves - w``: with four waves, 4:3:2:1. The
    queue hands them out in order, so every process starts on a large task and
    ends on a small one, and the fleet waits at the end for a fraction of one
    process's share instead of a whole equal task (guided scheduling, in a fixed
    number of tasks). Sizes never grow along the list and are at least one.

    Tapering ``w`` waves takes ``slots`` times 1+2+...+``w`` ranges; with fewer,
    fewer waves taper, and below two waves each process gets one task (or each
    range one, with fewer ranges than processes). No known worker processes
    (``slots`` <= 0) gives one task per range.
    """
    if total <= 0:
        return []
    if slots <= 0:
        return [1] * total
    waves = max(1, waves)
    while waves > 1 and total < slots * waves * (waves + 1) // 2:
        waves -= 1
    if waves == 1:
        return even_sizes(total, slots)
    weights = list(range(waves, 0, -1))
    # each wave's share of the ranges, rounded so the shares add up to the total
    exact = [total * w / sum(weights) for w in weights]
    shares = [math.floor(x) for x in exact]
    by_remainder = sorted(range(waves), key=lambda i: (shares[i] - exact[i], i))
    for i in by_remainder[:total - sum(shares)]:
        shares[i] += 1
    return [size for share in shares for size in even_sizes(share, slots)]


def split_by_sizes(ranges: Sequence[KeyRange], sizes: Sequence[int]) -> list[list[KeyRange]]:
    """Consecutive groups of ``ranges`` with these sizes (which must add up to its length)."""
    if sum(sizes) != len(ranges):
        raise ValueError(f"sizes add up to {sum(sizes)}, not {len(ranges)}")
    out: list[list[KeyRange]] = []
    start = 0
    for size in sizes:
        out.append(list(ranges[start:start + size]))
        start += size
    return out


def range_count_for(estimated_rows: float, block_rows: int) -> int:
    """How many ranges a table of ``estimated_rows`` needs at ``block_rows`` per range."""
    if estimated_rows <= block_rows:
        return 1
    return math.ceil(estimated_rows / block_rows)
